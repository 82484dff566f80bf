"""postscreen against a live Postfix 3.7 with postscreen in its master.cf: the same clients
(pregreeting, DNS-listed, allow- and denylisted, pipelining, non-SMTP, bare newline, leaving
early) get the same replies and the same postscreen, dnsblog and smtpd log lines from
mailgate with a `postscreen` line in its master.cf. Both resolve through the test DNS
server on 127.0.0.155:53; clients connect from 127.0.0.x addresses (mynetworks is
127.0.0.1/32). The beyond-Postfix behaviours are checked against Postfix too: where they
differ, the difference is the one documented (docs/postscreen.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SHARED, free_port, require, wait_until
from support import dns as dns_support
from support import reference
from support.postscreen import (
    Step,
    enable_reference_postscreen,
    ended,
    log_lines,
    mailgate_master_cf,
    play,
)

REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
ADDRESS = "127.0.0.155"
SITES = "bl.mailgate.test*2 bl2.mailgate.test wl.mailgate.test*-5"

BASE = {"mynetworks": "127.0.0.1/32", "postscreen_greet_wait": "1s",
        "smtpd_authorized_xclient_hosts": "", "smtpd_authorized_xforward_hosts": "",
        "inet_protocols": "ipv4"}
EHLO, MAIL = b"EHLO client.test", b"MAIL FROM:<a@client.test>"
RCPT, QUIT = b"RCPT TO:<alice@example.test>", b"QUIT"
C = "C"
R: Step = ("R", b"")
# a clean client: greeting, EHLO, MAIL, RCPT, QUIT
CLEAN: list[Step] = [(C, EHLO), (C, MAIL), (C, RCPT), (C, QUIT)]
# a client that talks before the greeting
PREGREET: list[Step] = [("S", EHLO + b"\r\n"), R]
Session = tuple[str, list[Step], bool]  # (source address, steps, read the greeting first)

CASES: dict[str, tuple[dict[str, str], list[Session]]] = {
    "pregreet-ignore": ({}, [("127.0.0.60", [*PREGREET, R, (C, MAIL), (C, RCPT), (C, QUIT)],
                              False),
                             ("127.0.0.61", CLEAN, True)]),
    "pregreet-enforce": ({"postscreen_greet_action": "enforce"},
                         [("127.0.0.62", [*PREGREET, (C, MAIL), (C, RCPT), (C, b"VRFY bob"),
                                          (C, b"DATA"), R], False)]),
    "pregreet-drop": ({"postscreen_greet_action": "drop"},
                      [("127.0.0.63", [*PREGREET, R], False)]),
    "hangup": ({}, [("127.0.0.64", [], False)]),
    "command-count-limit": ({"postscreen_greet_action": "enforce",
                             "postscreen_command_count_limit": "3"},
                            [("127.0.0.65", [*PREGREET, (C, b"NOOP"), (C, b"XYZZY"),
                                             (C, b"NOOP"), R], False)]),
    "dnsbl-weights-enforce": ({"postscreen_dnsbl_sites": SITES,
                               "postscreen_dnsbl_threshold": "2",
                               "postscreen_dnsbl_action": "enforce"},
                              [("127.0.0.2", [(C, b"HELO client.test"), (C, MAIL), (C, RCPT),
                                              (C, b"RCPT TO:<bob@example.test>"), (C, QUIT)],
                                True),
                               ("127.0.0.20", CLEAN, True), ("127.0.0.10", CLEAN, True),
                               ("127.0.0.21", CLEAN, True)]),
    "dnsbl-drop-reply-map": ({"postscreen_dnsbl_sites": SITES,
                              "postscreen_dnsbl_threshold": "2",
                              "postscreen_dnsbl_action": "drop",
                              "postscreen_dnsbl_reply_map":
                                  "inline:{ bl.mailgate.test=some-list }"},
                             [("127.0.0.2", [R], True), ("127.0.0.10", CLEAN, True)]),
    "dnsbl-threshold-ignore": ({"postscreen_dnsbl_sites": "bl.mailgate.test bl2.mailgate.test",
                                "postscreen_dnsbl_threshold": "3"},
                               [("127.0.0.2", CLEAN, True), ("127.0.0.20", CLEAN, True)]),
    "dnsbl-allowlist-threshold": ({"postscreen_dnsbl_sites": SITES,
                                   "postscreen_dnsbl_allowlist_threshold": "-1",
                                   "postscreen_pipelining_enable": "yes"},
                                  [("127.0.0.20", CLEAN, True)]),
    "access-list-enforce": ({"postscreen_denylist_action": "enforce"},
                            [("127.0.0.30", [(C, EHLO), (C, MAIL), (C, RCPT), (C, QUIT)],
                              True),
                             ("127.0.0.31", [(C, EHLO), (C, QUIT)], True),
                             ("127.0.0.1", [(C, EHLO), (C, QUIT)], True)]),
    "access-list-drop": ({"postscreen_denylist_action": "drop"},
                         [("127.0.0.30", [R], True), ("127.0.0.32", [(C, QUIT)], True)]),
    "access-list-ignore": ({}, [("127.0.0.30", [(C, EHLO), (C, QUIT)], True)]),
    "pipelining-enforce": ({"postscreen_pipelining_enable": "yes"},
                           [("127.0.0.41", [("S", EHLO + b"\r\n" + MAIL + b"\r\n"), R, R,
                                            (C, RCPT), (C, b"DATA"), R], True)]),
    "pipelining-drop": ({"postscreen_pipelining_enable": "yes",
                         "postscreen_pipelining_action": "drop"},
                        [("127.0.0.42", [(C, EHLO), ("S", MAIL + b"\r\n" + RCPT + b"\r\n"),
                                         R, R], True)]),
    "pipelining-ignore": ({"postscreen_pipelining_enable": "yes",
                           "postscreen_pipelining_action": "ignore"},
                          [("127.0.0.43", [("S", EHLO + b"\r\n" + MAIL + b"\r\n"), R, R,
                                           (C, QUIT)], True)]),
    "non-smtp-drop": ({"postscreen_non_smtp_command_enable": "yes"},
                      [("127.0.0.44", [(C, EHLO), (C, b"GET / HTTP/1.0"), R], True)]),
    "non-smtp-enforce": ({"postscreen_non_smtp_command_enable": "yes",
                          "postscreen_non_smtp_command_action": "enforce"},
                         [("127.0.0.45", [(C, EHLO), (C, b"Subject: hello"), (C, MAIL),
                                          (C, RCPT), (C, QUIT)], True)]),
    "non-smtp-ignore": ({"postscreen_non_smtp_command_enable": "yes",
                         "postscreen_non_smtp_command_action": "ignore"},
                        [("127.0.0.46", [(C, EHLO), (C, b"POST /x HTTP/1.1"), (C, QUIT)],
                          True)]),
    "bare-newline-enforce": ({"postscreen_bare_newline_enable": "yes",
                              "postscreen_bare_newline_action": "enforce"},
                             [("127.0.0.47", [("S", EHLO + b"\n"), R, (C, MAIL), (C, RCPT),
                                              (C, QUIT)], True)]),
    "bare-newline-drop": ({"postscreen_bare_newline_enable": "yes",
                           "postscreen_bare_newline_action": "drop"},
                          [("127.0.0.48", [(C, EHLO), ("S", MAIL + b"\n"), R, R], True)]),
    "bare-newline-ignore": ({"postscreen_bare_newline_enable": "yes"},
                            [("127.0.0.49", [("S", EHLO + b"\n"), R, (C, QUIT)], True)]),
    "deep-tests-hangup": ({"postscreen_pipelining_enable": "yes"},
                          [("127.0.0.50", [(C, EHLO)], True)]),
    "cache-pass-old": ({}, [("127.0.0.51", [(C, QUIT)], True),
                            ("127.0.0.51", [(C, QUIT)], True)]),
    "command-time-limit": ({"postscreen_greet_action": "enforce",
                            "postscreen_command_time_limit": "1s"},
                           [("127.0.0.53", [*PREGREET, R, R], False)]),
}


@pytest.fixture(scope="module")
def dns53() -> Iterator[str]:
    yield from dns_support.serve_on_53(ADDRESS)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory, dns53: str
            ) -> Iterator[reference.Instance]:
    for instance in dns_support.reference_resolving_at(
            REFERENCE, tmp_path_factory.mktemp("pslive"), ADDRESS, free_port()):
        enable_reference_postscreen(instance)
        yield instance


def run(port: int, sessions: list[Session], log: Path, skip: int = 0) -> list[str]:
    """Play each session, then wait until the server logged its end."""
    replies: list[str] = []
    for done, (source, steps, greeting) in enumerate(sessions, 1):
        replies += [*play(port, source, steps, greeting), "---"]
        wait_until(lambda n=done: ended(log, skip) >= n, timeout=30)  # type: ignore[misc]
    return replies


def both(server_factory, postfix: reference.Instance, dns53: str,  # type: ignore[no-untyped-def]
         name: str, settings: dict[str, str], sessions: list[Session]
         ) -> tuple[tuple[list[str], list[str], list[str]], tuple[list[str], list[str], list[str]]]:
    """(replies, ordered log lines, dnsblog lines) of Postfix, then of mailgate."""
    base = reference.read_settings(DATA / "main.cf")
    cache = f"btree:$data_directory/ps_{name.replace('-', '_')}"  # (not postmap'd)
    skip = postfix.configure({**base, **BASE, **settings, "postscreen_cache_map": cache})
    theirs = run(postfix.port, sessions, postfix.log, skip)
    port = free_port()
    server = server_factory(**{**base, **BASE, **settings, "resolver_servers": dns53})
    (server.root / "etc").mkdir(parents=True, exist_ok=True)
    (server.root / "etc" / "master.cf").write_text(mailgate_master_cf(port))
    server.start()
    assert server.port == port
    ours = run(port, sessions, server.log_path)
    if os.environ.get("MAILGATE_SHOW"):
        print("\n".join(theirs + log_lines(postfix.log, skip)[0]))
    return (theirs, *log_lines(postfix.log, skip)), (ours, *log_lines(server.log_path))


def differences(want: tuple[list[str], ...], got: tuple[list[str], ...]) -> list[str]:
    import difflib

    out = []
    for what, a, b in zip(("replies", "log", "dnsblog log"), want, got, strict=True):
        if a != b:
            out.append(f"{what}:\n" + "\n".join(difflib.unified_diff(a, b, "postfix",
                                                                     "mailgate", lineterm="")))
    return out


@pytest.mark.interop
@pytest.mark.parametrize("name", list(CASES))
def test_postscreen_like_postfix(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                                 dns53: str, name: str, tmp_path: Path) -> None:
    settings, sessions = CASES[name]
    if "access-list" in name:
        table = tmp_path / "access.cidr"
        table.write_text("127.0.0.30/32 reject\n127.0.0.31/32 permit\n127.0.0.32/32 dunno\n")
        settings = {**settings,
                    "postscreen_access_list": f"permit_mynetworks, cidr:{table}"}
    want, got = both(server_factory, postfix, dns53, name, settings, sessions)
    problems = differences(want, got)
    assert not problems, f"{name}\n" + "\n".join(problems)
    assert any(line.startswith("postscreen: CONNECT from") for line in want[1])


@pytest.mark.interop
def test_passing_the_deep_tests_goes_on_in_the_same_connection(  # type: ignore[no-untyped-def]
        server_factory, postfix: reference.Instance, dns53: str) -> None:
    """Beyond Postfix: Postfix's postscreen tells a client that passed the deep tests
    `450 4.3.2` and wants it back; mailgate lets it go on: the RCPT is smtpd's, the message
    is delivered, and the log says PASS NEW before smtpd's lines."""
    settings = {"postscreen_pipelining_enable": "yes", "postscreen_non_smtp_command_enable":
                "yes", "postscreen_bare_newline_enable": "yes"}
    steps: list[Step] = [(C, EHLO), (C, MAIL), (C, RCPT), (C, b"DATA"),
                         ("C", b"Subject: deep\r\n\r\nhello\r\n."), (C, QUIT)]
    (theirs, their_log, _), (ours, our_log, _) = both(
        server_factory, postfix, dns53, "deep-pass", settings, [("127.0.0.52", steps, True)])
    rcpt = theirs.index("C: " + RCPT.decode())
    assert theirs[:rcpt + 1] == ours[:rcpt + 1]  # the same greeting, EHLO (no PIPELINING), MAIL
    assert "S: 250-PIPELINING" not in ours[:rcpt]
    assert theirs[rcpt + 1] == "S: 450 4.3.2 Service currently unavailable"
    assert ours[rcpt + 1] == "S: 250 2.1.5 Ok"
    assert any(x.startswith("S: 250 2.0.0 Ok: queued as") for x in ours)
    assert "postscreen: PASS NEW [127.0.0.52]:PORT" in their_log
    assert our_log[:2] == ["postscreen: CONNECT from [127.0.0.52]:PORT to [127.0.0.1]:PORT",
                           "postscreen: PASS NEW [127.0.0.52]:PORT"]
    assert "smtpd: connect from unknown[127.0.0.52]" in our_log
    assert not any("DISCONNECT" in x for x in our_log)
    assert any("NOQUEUE: reject: RCPT" in x and "450 4.3.2" in x for x in their_log)


@pytest.mark.interop
def test_query_refused_answers_are_not_listings(  # type: ignore[no-untyped-def]
        server_factory, postfix: reference.Instance, dns53: str) -> None:
    """Beyond Postfix: bl.mailgate.test answers 127.255.255.254 for 127.0.0.3 (Spamhaus'
    "query refused"): Postfix counts it and rejects; mailgate logs a list error and lets the
    client through; other answers count the same for both."""
    settings = {"postscreen_dnsbl_sites": "bl.mailgate.test*2",
                "postscreen_dnsbl_threshold": "2", "postscreen_dnsbl_action": "enforce"}
    (theirs, their_log, their_lists), (ours, our_log, our_lists) = both(
        server_factory, postfix, dns53, "refused",
        settings, [("127.0.0.3", CLEAN, True), ("127.0.0.2", CLEAN, True)])
    assert "postscreen: DNSBL rank 2 for [127.0.0.3]:PORT" in their_log
    assert "S: 550 5.7.1 Service unavailable; client [127.0.0.3] blocked using " \
           "bl.mailgate.test" in theirs
    assert not any("[127.0.0.3]" in x and "DNSBL rank" in x for x in our_log)
    assert "postscreen: PASS NEW [127.0.0.3]:PORT" in our_log
    assert "dnsblog: warning: bl.mailgate.test: list error: 3.0.0.127.bl.mailgate.test " \
           "answered 127.255.255.254: error code (query refused or resolver blocked); " \
           "not a listing" in our_lists
    second = ours.index("---") + 1  # 127.0.0.2 is listed: the same for both
    assert theirs[theirs.index("---") + 1:] == ours[second:]
    assert [x for x in their_lists if "127.0.0.2 " in x] == \
        [x for x in our_lists if "127.0.0.2 " in x]


@pytest.mark.interop
def test_fail2ban_ddos_mode_matches_like_postfix(  # type: ignore[no-untyped-def]
        server_factory, postfix: reference.Instance, dns53: str, tmp_path: Path) -> None:
    """fail2ban's `postfix[mode=ddos]` bans on PREGREET, HANGUP and COMMAND ... LIMIT lines:
    it finds as many in mailgate's log (`syslog_name = postfix`) as in Postfix's."""
    from interop.test_fail2ban import matches

    require("fail2ban-regex")
    settings = {"postscreen_greet_action": "enforce", "postscreen_command_count_limit": "2",
                "syslog_name": "postfix"}
    sessions: list[Session] = [("127.0.0.66", [*PREGREET, (C, b"NOOP"), (C, b"NOOP")], False),
                               ("127.0.0.67", [], False), ("127.0.0.68", CLEAN, True)]
    base = reference.read_settings(DATA / "main.cf")
    skip = postfix.configure({**base, **BASE, **settings,
                              "postscreen_cache_map": "btree:$data_directory/ps_fail2ban"})
    run(postfix.port, sessions, postfix.log, skip)
    theirs = tmp_path / "postfix.log"
    theirs.write_text("".join(postfix.log.read_text().splitlines(keepends=True)[skip:]))
    port = free_port()
    server = server_factory(**{**base, **BASE, **settings, "resolver_servers": dns53})
    (server.root / "etc").mkdir(parents=True, exist_ok=True)
    (server.root / "etc" / "master.cf").write_text(mailgate_master_cf(port))
    server.start()
    run(port, sessions, server.log_path)
    want = matches(theirs, "postfix", "ddos")
    assert want == 3  # PREGREET, COMMAND COUNT LIMIT, HANGUP
    assert matches(server.log_path, "postfix", "ddos") == want


def _concurrent(port: int, source: str) -> list[str]:
    """Two connections at once from one client: the second while the first waits out the
    greet wait (postscreen_client_connection_count_limit = 1)."""
    import socket

    from support.dialogue import _Reader

    first = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    try:
        first_reader = _Reader(first)
        assert first_reader.line() is not None  # the teaser: the first is being screened
        second = socket.create_connection(("127.0.0.1", port), timeout=20,
                                          source_address=(source, 0))
        with second:
            refused = _Reader(second).reply()
        first_reader.reply()  # (the rest of the greeting)
        first.sendall(b"QUIT\r\n")
        return refused + first_reader.reply()
    finally:
        first.close()


@pytest.mark.interop
def test_client_connection_count_limit_like_postfix(  # type: ignore[no-untyped-def]
        server_factory, postfix: reference.Instance, dns53: str) -> None:
    settings = {"postscreen_client_connection_count_limit": "1"}
    base = reference.read_settings(DATA / "main.cf")
    skip = postfix.configure({**base, **BASE, **settings,
                              "postscreen_cache_map": "btree:$data_directory/ps_count"})
    theirs = _concurrent(postfix.port, "127.0.0.54")
    wait_until(lambda: ended(postfix.log, skip) >= 2, timeout=30)
    port = free_port()
    server = server_factory(**{**base, **BASE, **settings, "resolver_servers": dns53})
    (server.root / "etc").mkdir(parents=True, exist_ok=True)
    (server.root / "etc" / "master.cf").write_text(mailgate_master_cf(port))
    server.start()
    ours = _concurrent(port, "127.0.0.54")
    wait_until(lambda: ended(server.log_path) >= 2, timeout=30)
    assert theirs == ours == ["421 4.7.0 Error: too many connections", "221 2.0.0 Bye"]
    want, got = log_lines(postfix.log, skip)[0], log_lines(server.log_path)[0]
    assert want == got
    assert "postscreen: NOQUEUE: reject: CONNECT from [127.0.0.54]:PORT: too many " \
           "connections" in want
