"""DNS-based restrictions end to end: a real mailgate, clients on several loopback addresses,
and the test DNS server (tests/data/dns) behind `resolver_servers`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DNS_SERVER, Client, Server

RBL = "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.mailgate.test"


def session(server: Server, source: str, commands: list[str]) -> list[str]:
    """Greeting, then one reply per command; QUIT at the end."""
    client = Client(server.port, source=source)
    try:
        replies = [client.reply()]
        replies += [client.cmd(command) for command in commands]
        client.cmd("QUIT")
        return replies
    finally:
        client.close()


def envelope(helo: str = "good.mailgate.test", sender: str = "someone@mailgate.test",
             rcpt: str = "alice@example.test") -> list[str]:
    return [f"EHLO {helo}", f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>"]


@pytest.fixture(scope="module")
def names_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    server = Server(tmp_path_factory.mktemp("names"), extra={
        "smtpd_client_restrictions": "reject_unknown_client_hostname",
        "unknown_client_reject_code": "550"}).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("source", "logged", "reply"), [
    ("127.0.0.10", "good.mailgate.test[127.0.0.10]", "250 2.1.5 Ok"),
    ("127.0.0.11", "unknown[127.0.0.11]", "550 5.7.25 Client host rejected: cannot find your "
                                           "hostname, [127.0.0.11]"),
    ("127.0.0.12", "unknown[127.0.0.12]", "550 5.7.25 Client host rejected: cannot find your "
                                           "hostname, [127.0.0.12]"),
    ("127.0.0.13", "unknown[127.0.0.13]", "450 4.7.25 Client host rejected: cannot find your "
                                           "hostname, [127.0.0.13]"),
    ("127.0.0.15", "unknown[127.0.0.15]", "450 4.7.25 Client host rejected: cannot find your "
                                           "hostname, [127.0.0.15]"),
])
def test_client_name_lookup_at_connect(names_server: Server, source: str, logged: str,
                                       reply: str) -> None:
    """PTR then forward confirmation: a forged or missing name is permanent (the reject code
    applies), a lookup that times out or fails is temporary (always 450)."""
    replies = session(names_server, source, envelope())
    assert replies[3] == reply
    names_server.wait_log(rf"smtpd: connect from {re.escape(logged)}$")


def test_forged_name_warning(names_server: Server) -> None:
    session(names_server, "127.0.0.11", ["EHLO x"])
    names_server.wait_log(r"smtpd: warning: hostname forged\.mailgate\.test does not resolve "
                          r"to address 127\.0\.0\.11$")


def test_numeric_ptr_is_no_name(names_server: Server) -> None:
    session(names_server, "127.0.0.14", ["EHLO x"])
    names_server.wait_log(r"smtpd: warning: numeric hostname: 127\.0\.0\.14$")
    names_server.wait_log(r"smtpd: connect from unknown\[127\.0\.0\.14\]")


@pytest.fixture(scope="module")
def dns_server_checks(tmp_path_factory: pytest.TempPathFactory) -> object:
    server = Server(tmp_path_factory.mktemp("checks"), extra={
        "smtpd_helo_restrictions": "reject_unknown_helo_hostname",
        "smtpd_sender_restrictions": "reject_unknown_sender_domain, "
                                     "reject_rhsbl_sender rhs.mailgate.test",
        "smtpd_recipient_restrictions": "reject_rbl_client bl.mailgate.test, "
                                        "reject_unknown_recipient_domain, "
                                        "check_recipient_mx_access inline:{{127.0.0.1=REJECT "
                                        "mail for our own MX}}",
    }).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("commands", "expected"), [
    (envelope(helo="nxdomain.mailgate.test"),
     "450 4.7.1 <nxdomain.mailgate.test>: Helo command rejected: Host not found"),
    (envelope(helo="[1.2.3.400]"), "501 5.5.2 <[1.2.3.400]>: Helo command rejected: invalid ip "
                                   "address"),
    (envelope(sender="a@nxdomain.mailgate.test"),
     "450 4.1.8 <a@nxdomain.mailgate.test>: Sender address rejected: Domain not found"),
    (envelope(sender="a@nullmx.mailgate.test"), "550 5.7.27 <a@nullmx.mailgate.test>: Sender "
     "address rejected: Domain nullmx.mailgate.test does not accept mail (nullMX)"),
    (envelope(sender="a@sixonly.mailgate.test"), "250 2.1.5 Ok"),
    (envelope(sender="a@alias.mailgate.test"), "250 2.1.5 Ok"),
    (envelope(sender="a@timeout.mailgate.test"),
     "450 4.1.8 <a@timeout.mailgate.test>: Sender address rejected: Domain not found"),
    (envelope(sender="a@servfail.mailgate.test"),
     "450 4.1.8 <a@servfail.mailgate.test>: Sender address rejected: Domain not found"),
    (envelope(sender="a@listed.mailgate.test"), "554 5.7.1 Service unavailable; Sender address "
     "[a@listed.mailgate.test] blocked using rhs.mailgate.test"),
    (envelope(rcpt="bob@nullmx.mailgate.test"), "556 5.1.10 <bob@nullmx.mailgate.test>: "
     "Recipient address rejected: Domain nullmx.mailgate.test does not accept mail (nullMX)"),
    (envelope(rcpt="bob@mailgate.test"),
     "554 5.7.1 <bob@mailgate.test>: Recipient address rejected: mail for our own MX"),
])
def test_dns_restriction_replies(dns_server_checks: Server, commands: list[str],
                                 expected: str) -> None:
    """Each restriction's reply at RCPT (smtpd_delay_reject = yes)."""
    assert session(dns_server_checks, "127.0.0.1", commands)[3] == expected


def test_rbl_reject_and_log_line(dns_server_checks: Server) -> None:
    replies = session(dns_server_checks, "127.0.0.2", envelope())
    assert replies[3] == RBL + "; listed at bl.mailgate.test"
    dns_server_checks.wait_log(
        r"smtpd: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: " + re.escape(RBL) +
        r"; listed at bl\.mailgate\.test; from=<someone@mailgate\.test> "
        r"to=<alice@example\.test> proto=ESMTP helo=<good\.mailgate\.test>$")


@pytest.mark.parametrize(("source", "answer"), [("127.0.0.3", "127.255.255.254"),
                                                ("127.0.0.21", "192.0.2.1")])
def test_list_errors_reject_nothing(dns_server_checks: Server, source: str, answer: str) -> None:
    """A refused-resolver code or an answer outside 127/8 is a list error, not a listing."""
    assert session(dns_server_checks, source, envelope())[3] == "250 2.1.5 Ok"
    rev = ".".join(reversed(source.split(".")))
    dns_server_checks.wait_log(rf"smtpd: warning: bl\.mailgate\.test: list error: "
                               rf"{re.escape(rev)}\.bl\.mailgate\.test answered "
                               rf"{re.escape(answer)}: .*; not a listing$")


def test_rbl_timeout_is_not_a_listing(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Postfix gives the client the benefit of the doubt when a list does not answer."""
    server = server_factory(
        smtpd_recipient_restrictions="reject_rbl_client slowbl.mailgate.test").start()
    assert session(server, "127.0.0.1", envelope())[3] == "250 2.1.5 Ok"
    server.wait_log(r"smtpd: warning: 1\.0\.0\.127\.slowbl\.mailgate\.test: RBL "
                               r"lookup error: Host or domain name not found\. Name service "
                               r"error for name=1\.0\.0\.127\.slowbl\.mailgate\.test type=A: "
                               r"Host not found, try again$")


def test_tempfail_action_defer(server_factory) -> None:  # type: ignore[no-untyped-def]
    """unknown_address_tempfail_action = defer: the 450 comes at once, at MAIL."""
    server = server_factory(smtpd_delay_reject="no",
                            smtpd_sender_restrictions="reject_unknown_sender_domain",
                            unknown_address_tempfail_action="defer").start()
    replies = session(server, "127.0.0.1", envelope(sender="a@timeout.mailgate.test"))
    assert replies[2] == ("450 4.1.8 <a@timeout.mailgate.test>: Sender address rejected: "
                          "Domain not found")


def test_weighted_scoring(server_factory) -> None:  # type: ignore[no-untyped-def]
    """No single list decides: two lists (2+2) reject, one list with an allowlist (2+2-3) not."""
    server = server_factory(
        smtpd_client_restrictions="reject_dnsbl_score",
        smtpd_dnsbl_sites="bl.mailgate.test*2, bl2.mailgate.test*2, "
                          "wl.mailgate.test=127.0.10.[0..255]*-3, refused.mailgate.test*9",
        smtpd_dnsbl_threshold="3").start()
    replies = session(server, "127.0.0.2", envelope())
    assert replies[3] == ("554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
                          "bl.mailgate.test, bl2.mailgate.test; DNSBL score 4 >= 3")
    assert session(server, "127.0.0.20", envelope())[3] == "250 2.1.5 Ok"
    assert session(server, "127.0.0.3", envelope())[3] == "250 2.1.5 Ok"  # refused code


def test_check_command_looks_the_client_up(tmp_path: Path) -> None:
    """`mailgate check` without --client-name makes smtpd's connect-time lookup, and shows
    the DNS list reply."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(
        "myhostname = mx.example.test\nmydestination = $myhostname\n"
        "smtpd_client_restrictions = reject_rbl_client bl.mailgate.test\n"
        f"mailgate_home = {tmp_path / 'data'}\nresolver_servers = {DNS_SERVER[0]}\n")
    out = subprocess.run([sys.executable, "-m", "mailgate.cli", "check", "-c", str(etc),
                          "--client-address", "127.0.0.2",
                          "--recipient", "postmaster@mx.example.test"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stderr
    assert "client unknown[127.0.0.2]" in out.stdout
    assert "RCPT: " + RBL + "; listed at bl.mailgate.test" in out.stdout


@pytest.fixture(scope="module")
def slow_names_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    """PTR queries for 127.0.0.13 are never answered: its lookup lasts resolver_timeout."""
    server = Server(tmp_path_factory.mktemp("slow-names"),
                    extra={"resolver_timeout": "3s"}).start()
    yield server
    server.stop()


def test_greeting_leaves_before_the_name_lookup_ends(slow_names_server: Server) -> None:
    """Decision 0043: with smtpd_delay_reject = yes the 220 is written at accept; the session
    logs `connect from` (and answers commands) once the name is known."""
    server = slow_names_server
    client = Client(server.port, source="127.0.0.13", timeout=60)
    try:
        assert client.reply().startswith("220 ")
        assert not any("127.0.0.13" in line for line in server.log())  # still looking up
        client.send("QUIT")
        assert client.reply().startswith("221 ")
    finally:
        client.close()
    logged = server.wait_log(r"smtpd: (connect|disconnect) from unknown\[127\.0\.0\.13\]",
                             count=2, timeout=60)
    assert "connect from" in logged[0] and "disconnect from" in logged[1]


@pytest.fixture(scope="module")
def slow_names_no_delay(tmp_path_factory: pytest.TempPathFactory) -> object:
    server = Server(tmp_path_factory.mktemp("slow-names-nodelay"), extra={
        "resolver_timeout": "2s", "smtpd_delay_reject": "no",
        "smtpd_client_restrictions": "reject_unknown_client_hostname"}).start()
    yield server
    server.stop()


def test_without_delay_reject_the_greeting_waits_for_the_name(
        slow_names_no_delay: Server) -> None:
    """smtpd_delay_reject = no: the client restrictions run before the greeting and may
    replace it, so it waits for the name as in Postfix: here the lookup times out and the
    reply that takes the greeting's place says so."""
    client = Client(slow_names_no_delay.port, source="127.0.0.13", timeout=60)
    try:
        assert client.reply() == ("450 4.7.25 Client host rejected: cannot find your "
                                  "hostname, [127.0.0.13]")
    finally:
        client.close()
