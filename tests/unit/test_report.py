"""The report's parts without a server: reject lines taken apart, timestamps, bounded counters,
dictionary-attack rules and the period filter."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest

from mailgate.report.attacks import Attacks, network
from mailgate.report.bounded import BoundedCounter
from mailgate.report.command import run
from mailgate.report.logline import Clock, hour, stamp
from mailgate.report.rejects import parse_reject
from mailgate.report.summary import Summary

NOW = datetime(2026, 11, 26, 12, 0, 0)


@pytest.mark.parametrize(("text", "stage", "reason", "restriction", "sender", "recipient"), [
    ("RCPT from unknown[192.0.2.1]: 554 5.7.1 Service unavailable; Client host [192.0.2.1] "
     "blocked using zen.example; https://zen.example/q?ip=192.0.2.1; from=<a@b.example> "
     "to=<c@d.example> proto=ESMTP helo=<x.example>", "Client host",
     "blocked using zen.example", "reject_rbl_client", "a@b.example", "c@d.example"),
    ("RCPT from x[192.0.2.4]: 450 4.7.1 <foo>: Helo command rejected: Host not found; from=<> "
     "to=<u@d.example> proto=SMTP helo=<foo>", "Helo command", "Host not found",
     "reject_unknown_helo_hostname", "", "u@d.example"),
    ("CONNECT from x[192.0.2.4]: 554 5.7.1 <x[192.0.2.4]>: Client host rejected: Access "
     "denied; proto=SMTP", "Client host", "Access denied", "check_client_access", None, None),
    ("RCPT from x[192.0.2.4]:4711: 454 4.7.1 <u@elsewhere.example>: Relay access denied; "
     "from=<a@b.example> to=<u@elsewhere.example> proto=ESMTP helo=<h>", "Recipient address",
     "Relay access denied", "reject_unauth_destination", "a@b.example", "u@elsewhere.example"),
    ("RCPT from x[2001:db8::5]: 550 5.1.1 <nobody@example.test>: Recipient address rejected: "
     "User unknown in virtual mailbox table; from=<a@b> to=<nobody@example.test> proto=ESMTP "
     "helo=<h>", "Recipient address", "User unknown in virtual mailbox table",
     "reject_unlisted_recipient", "a@b", "nobody@example.test"),
    ("MAIL from x[192.0.2.4]: 450 4.1.8 <a@nx.example>: Sender address rejected: Domain not "
     "found; from=<a@nx.example> proto=ESMTP helo=<h>", "Sender address", "Domain not found",
     "reject_unknown_sender_domain", "a@nx.example", None),
])
def test_reject_lines(text: str, stage: str, reason: str, restriction: str,
                      sender: str | None, recipient: str | None) -> None:
    r = parse_reject(text)
    assert r is not None
    assert (r.stage, r.reason, r.restriction, r.sender, r.recipient) == \
        (stage, reason, restriction, sender, recipient)


def test_split_and_clock() -> None:
    s = Summary(Clock(NOW))
    s.consume(["Nov 26 07:11:00 mx mailgate/smtpd[42]: connect from x[1.2.3.4]\n",
               "2026-11-26T07:11:02.5+01:00 mx postfix-out/smtp[7]: ABC: to=<a@b>, "
               "relay=r, delay=1, dsn=2.0.0, status=sent (ok)",
               "Nov 26 07:11:03 mx sshd[42]: connect from x[1.2.3.4]",  # not a mail program
               "Nov 26 07:11:04 mx kernel: [1.2] connect from x"])
    s.done()
    assert (s.lines, s.matched, s.connections, s.delivered) == (4, 2, 1, 1)
    assert (s.first, s.last) == (datetime(2026, 11, 26, 7, 11), datetime(2026, 11, 26, 7, 11, 2))
    assert (stamp("Nov 26 07:11:00 mx x/y[1]: z"), hour("2026-11-26T07:11:00 mx x/y[1]: z")) \
        == ("Nov 26 07:11:00", "2026-11-26T07")
    clock = Clock(datetime(2026, 1, 5))
    assert clock.parse("Dec 31 23:59:59") == datetime(2025, 12, 31, 23, 59, 59)  # last year
    assert clock.parse("Jan  5 01:02:03") == datetime(2026, 1, 5, 1, 2, 3)
    assert clock.parse("2026-11-26T07:11:00.5+01:00") == datetime(2026, 11, 26, 7, 11)
    assert clock.parse("Foo 99 99:99:99") is None


def test_bounded_counter_keeps_heavy_hitters() -> None:
    c: BoundedCounter[str] = BoundedCounter(cap=100)
    for i in range(10_000):
        c.add(f"once{i}")
        if i % 10 == 0:
            c.add("heavy")
    assert len(c) <= 100 and c.pruned > 0
    assert c.top(1) == [("heavy", 1000)]


def test_attack_rules() -> None:
    a = Attacks()
    for i in range(12):  # a moving spammer: 12 addresses of one /24, one guess each
        a.unknown_user(f"198.51.100.{i}", f"user{i}@example.test", None)
    for _ in range(10):  # a typo repeated: one recipient, no attack
        a.unknown_user("192.0.2.9", "alcie@example.test", None)
    for i in range(5):
        a.unknown_user("2001:db8::7", f"admin{i}@example.test", None)
    found = {f.cidr: (f.rejects, f.addresses, f.recipients) for f in a.findings(5, 3)}
    assert found == {"198.51.100.0/24": (12, 12, 12), "2001:db8::7/128": (5, 1, 5)}
    assert network("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"
    assert network("unknown") is None


def _line(stamp: str, text: str, prog: str = "smtpd") -> str:
    return f"{stamp} mx postfix/{prog}[42]: {text}\n"


def test_period_and_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = []
    for h in range(3):
        for n in range(2000):  # distinct rejected clients: more than the counters keep
            lines.append(_line(f"Nov 26 0{h}:00:{n % 60:02d}",
                               f"NOQUEUE: reject: RCPT from x[10.{h}.{n // 250}.{n % 250}]: "
                               "554 5.7.1 <x>: Client host rejected: no; from=<a@b> to=<c@d> "
                               "proto=ESMTP helo=<h>"))
    log = tmp_path / "maillog"
    log.write_text("".join(lines))
    out = io.StringIO()
    assert run([str(log)], since="2026-11-26 01:00", until="2026-11-26 02:00", now=NOW,
               out=out) == 0
    assert "      2000  rejected" in out.getvalue()
    s = Summary()
    s.clients.cap = 500
    s.consume(lines)
    assert s.rejected == 6000 and len(s.clients) <= 500 and s.clients.pruned > 0


def test_bad_arguments(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert run([], since="yesterday") == 2
    assert "bad date 'yesterday'" in capsys.readouterr().err


def test_byte_ranges_cover_every_line_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mailgate.report.reading import range_batches, split

    files = []
    for n, text in enumerate(["a\nbb\nccc\n", "dddd\ne\n\nfffff", "g\n"]):
        path = tmp_path / f"log{n}"
        path.write_text(text)
        files.append(str(path))
    sizes = [Path(f).stat().st_size for f in files]
    want = ["a", "bb", "ccc", "dddd", "e", "", "fffff", "g"]
    for parts in range(1, 12):
        got = [line for part in split(files, sizes, parts) for name, a, b in part
               for batch in range_batches(name, a, b, lambda n: None) for line in batch]
        assert got == want, parts


def test_parallel_report_equals_one_process(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same log read by several processes (merged) and by one (stdin) gives the same
    report, links across the parts included (client= here, qmgr from= there)."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from mailgate.report import parallel

    bench = Path(__file__).resolve().parents[2] / "bench" / "reportbench.py"
    spec = importlib.util.spec_from_file_location("reportbench", bench)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = tmp_path / "maillog"
    module.generate(log, 40_000)
    monkeypatch.setattr(parallel, "MIN_PART", 1 << 18)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 4)
    assert parallel.workers_for(log.stat().st_size) == 4
    out = io.StringIO()
    assert run([str(log)], now=NOW, out=out) == 0
    single = subprocess.run([sys.executable, "-m", "mailgate.cli", "report"],
                            input=log.read_bytes(), capture_output=True, check=True,
                            timeout=120).stdout.decode()
    assert "198.51.100.0/24" in single
    assert out.getvalue() == single
    lines = log.read_text().splitlines()
    assert single.startswith(f"mailgate report: 2026-11-25 00:00:00 .. 2026-11-25 "
                             f"{lines[-1][7:15]} ({len(lines)} lines, {len(lines)} in the "
                             "period)"), single[:120]
