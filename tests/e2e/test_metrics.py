"""Prometheus metrics end to end: two smtpd workers, sessions that each imply a count, and
/metrics scraped over HTTP and parsed with prometheus_client.parser."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import Client, _alive, free_port, wait_until
from support.metrics import scrape, total, value
from support.policy import Scripted


class Dialogue:
    """A session that remembers the verbs it sent and the reply codes it got."""

    def __init__(self, port: int, source: str, commands: Counter[str], codes: Counter[str]
                 ) -> None:
        self.client = Client(port, source=source)
        self.commands, self.codes = commands, codes
        self.got(self.client.reply())

    def got(self, reply: str) -> str:
        self.codes[reply[:3]] += 1
        return reply

    def cmd(self, line: str) -> str:
        self.commands[line.split()[0].upper() if line.split()[0].isalpha() else "other"] += 1
        return self.got(self.client.cmd(line))

    def envelope(self, sender: str, rcpt: str, helo: str = "client.example.test") -> str:
        self.cmd(f"EHLO {helo}")
        self.cmd(f"MAIL FROM:<{sender}>")
        return self.cmd(f"RCPT TO:<{rcpt}>")

    def data(self) -> str:
        assert self.cmd("DATA").startswith("354")
        return self.got(self.client.cmd("Subject: metrics\r\n\r\nbody\r\n."))

    def quit(self) -> None:
        self.cmd("QUIT")
        self.client.close()


def mailgate(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mailgate.cli", *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_metrics_families(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policy = Scripted(tmp_path / "policy",
                      [["RCPT", "sender", "spam@x.test", "554 5.7.1 policy says no"]]).start()
    server = server_factory(
        metrics_listen="127.0.0.1:0", smtpd_processes="2",
        smtpd_client_restrictions="check_client_access inline:{{127.0.0.5=REJECT go away}}, "
                                  "reject_rbl_client bl.mailgate.test",
        smtpd_helo_restrictions="warn_if_reject reject_non_fqdn_helo_hostname",
        smtpd_sender_restrictions="check_sender_access inline:{hold@x.test=HOLD, "
                                  "drop@x.test=DISCARD, "
                                  f"{{filter@x.test=FILTER smtp:[127.0.0.1]:{free_port()}}}}}",
        smtpd_recipient_restrictions=f"check_policy_service {policy.endpoint}, "
                                     "permit_mynetworks, reject_unauth_destination",
        smtpd_soft_error_limit="2", smtpd_error_sleep_time="2s").start()
    try:
        assert server.proc is not None and server.proc.stdout is not None
        line = server.proc.stdout.readline()
        m = re.fullmatch(r"mailgate: metrics on (http://127\.0\.0\.1:\d+/metrics)\n", line)
        assert m, line
        url = m.group(1)
        commands: Counter[str] = Counter()
        codes: Counter[str] = Counter()

        def dialogue(source: str = "127.0.0.1") -> Dialogue:
            return Dialogue(server.port, source, commands, codes)

        ok = dialogue()  # accepted and delivered to a Maildir
        assert ok.envelope("alice@example.test", "alice@example.test").startswith("250")
        assert ok.data().startswith("250")
        ok.quit()
        d = dialogue("127.0.0.5")  # client list: the inline table
        assert d.envelope("a@x.test", "bob@example.test") == \
            "554 5.7.1 <unknown[127.0.0.5]>: Client host rejected: go away"
        d.quit()
        d = dialogue("127.0.0.2")  # client list: the DNS list
        assert d.envelope("a@x.test", "bob@example.test").startswith("554 5.7.1 Service unavail")
        d.quit()
        for sender, result in (("hold@x.test", "held"), ("drop@x.test", "discarded"),
                               ("filter@x.test", "filtered")):
            d = dialogue()
            helo = "nodots" if result == "held" else "client.example.test"  # a reject_warning
            assert d.envelope(sender, "bob@example.test", helo).startswith("250"), result
            assert d.data().startswith("250"), result
            d.quit()
        d = dialogue()  # recipient: unknown user, then the policy service
        assert d.envelope("a@x.test", "nobody@example.test").startswith("550 5.1.1")
        assert d.cmd("RCPT TO:<bob@example.test>").startswith("250")
        d.quit()
        d = dialogue()
        assert d.envelope("spam@x.test", "bob@example.test") == \
            "554 5.7.1 <bob@example.test>: Recipient address rejected: policy says no"
        d.quit()

        tarpit = dialogue()  # the third error's reply waits in the tarpit
        tarpit.commands["other"] += 3
        tarpit.client.send("FOO\r\nFOO\r\nFOO")
        wait_until(lambda: value(scrape(url), "mailgate_smtpd_tarpit_sessions") == 1)
        for _ in range(3):
            tarpit.got(tarpit.client.reply())
        tarpit.quit()

        def settled() -> bool:
            s = scrape(url)
            return (value(s, "mailgate_smtpd_sessions") == 0
                    and value(s, "mailgate_smtpd_tarpit_sessions") == 0
                    and value(s, "mailgate_deliveries_total", transport="virtual",
                              result="sent") == 1
                    and value(s, "mailgate_queue_messages", queue="deferred") == 1)

        wait_until(settled)
        s = scrape(url)
        assert value(s, "mailgate_smtpd_connections_total") == 9
        assert value(s, "mailgate_smtpd_tarpit_delay_seconds_total") == 4.0  # FOO, QUIT
        assert {v: value(s, "mailgate_smtpd_commands_total", command=v) for v in commands} == \
            dict(commands)
        assert {c: value(s, "mailgate_smtpd_replies_total", code=c) for c in codes} == \
            dict(codes)
        assert total(s, "mailgate_smtpd_replies_total") == sum(codes.values())
        rejects = {(dict(ls)["stage"], dict(ls)["restriction"], dict(ls)["table"]): v
                   for (n, ls), v in s.items() if n == "mailgate_smtpd_rejects_total"}
        assert rejects == {
            ("client", "check_client_access", "inline:{{127.0.0.5=REJECT go away}}"): 1,
            ("client", "reject_rbl_client", ""): 1,
            ("recipient", "reject_unlisted_recipient", ""): 1,
            ("recipient", "check_policy_service", policy.endpoint): 1}
        assert value(s, "mailgate_smtpd_reject_warnings_total", stage="helo",
                     restriction="reject_non_fqdn_helo_hostname", table="") == 1
        for result in ("accepted", "held", "discarded", "filtered"):
            assert value(s, "mailgate_smtpd_messages_total", result=result) == 1, result
        assert {q: value(s, "mailgate_queue_messages", queue=q)
                for q in ("incoming", "active", "deferred", "hold")} == \
            {"incoming": 0, "active": 0, "deferred": 1, "hold": 1}
        assert value(s, "mailgate_deliveries_total", transport="smtp", result="deferred") == 1
        assert value(s, "mailgate_dnsbl_hits_total", list="bl.mailgate.test") == 1
        assert value(s, "mailgate_dns_lookups_total", type="TXT", result="ok") == 1
        assert value(s, "mailgate_dns_lookups_total", type="A", result="nxdomain") >= 1
        assert total(s, "mailgate_dns_lookups_total", type="PTR") >= 1  # client names
        for rdtype in ("A", "PTR", "TXT"):
            assert value(s, "mailgate_dns_lookup_duration_seconds_count", type=rdtype) == \
                total(s, "mailgate_dns_lookups_total", type=rdtype)
        asked = len(policy.requests())
        assert asked == 6  # every RCPT that passed the client list, but the discarded one
        assert value(s, "mailgate_policy_requests_total", service=policy.endpoint,
                     result="ok") == asked
        assert value(s, "mailgate_policy_request_duration_seconds_count",
                     service=policy.endpoint) == asked
        # Log rotation and queue flush signals reach every child: the metrics process
        # must ignore them (the default action of SIGUSR1/SIGUSR2 would kill it).
        children = server.workers()
        assert len(children) == 4  # two smtpd workers, the accept process, the metrics one
        server.log_path.rename(server.log_path.with_name("maillog.0"))
        mailgate("postlog", "-c", str(server.root / "etc"), "reopen")
        wait_until(server.log_path.exists)  # the workers reopened the log
        mailgate("queue", "-c", str(server.root / "etc"), "flush")
        server.wait_log(r"status=deferred")  # the flushed retry, in the new file
        assert all(_alive(pid) for pid in children), children
        assert value(scrape(url), "mailgate_smtpd_connections_total") == 9
    finally:
        server.stop()
        policy.stop()


def test_policyd_metrics(tmp_path: Path) -> None:
    """`mailgate policyd` with metrics_listen: answers by action, latency, the engine's
    rejects by stage and restriction; two workers."""
    import socket

    from conftest import base_main_cf
    from e2e.test_policy import answers, request
    from support.policy import Policyd

    daemon = Policyd(tmp_path, base_main_cf(tmp_path) + (
        "policyd_listen = 127.0.0.1:0\npolicyd_processes = 2\nmetrics_listen = 127.0.0.1:0\n"
        "policyd_restrictions = reject_unlisted_recipient, "
        "check_client_access inline:{192.0.2.66=REJECT}\n")).start()
    try:
        assert daemon.proc is not None and daemon.proc.stdout is not None
        line = daemon.proc.stdout.readline()
        m = re.fullmatch(r"mailgate policyd: metrics on (http://127\.0\.0\.1:\d+/metrics)\n",
                         line)
        assert m, line
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            sock.sendall(request() + request(client_address="192.0.2.66")
                         + request(recipient="nobody@example.test") + request()
                         + b"garbage\n\n")
            assert len(answers(sock, 5)) == 5

        def answered() -> bool:
            return total(scrape(m.group(1)), "mailgate_policyd_requests_total") == 5

        wait_until(answered)
        s = scrape(m.group(1))
        assert {a: value(s, "mailgate_policyd_requests_total", action=a)
                for a in ("DUNNO", "5xx")} == {"DUNNO": 3, "5xx": 2}
        assert value(s, "mailgate_policyd_request_duration_seconds_count") == 5
        assert value(s, "mailgate_smtpd_rejects_total", stage="policyd",
                     restriction="check_client_access",
                     table="inline:{192.0.2.66=REJECT}") == 1
        assert value(s, "mailgate_smtpd_rejects_total", stage="policyd",
                     restriction="reject_unlisted_recipient", table="") == 1
        assert not any(n == "mailgate_queue_messages" for n, _ in s)
    finally:
        daemon.stop()
