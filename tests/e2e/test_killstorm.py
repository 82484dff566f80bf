"""kill -9 storm, short mode: five SIGKILLs of random mailgate processes while smtp-source and
a Python client send to Maildir and to a relay sink; nothing acknowledged is lost or doubled
in a Maildir (scripts/killstorm is the long run). Also the pieces the count relies on: the
durable sink's record, the smtp-source log reader and the count itself."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

import pytest

from conftest import require
from support.killcount import count, print_report
from support.killload import Ledger, Outcome, SmtpSourceParser
from support.killstorm import parse_args, run, start_sink
from support.sink import read_records


def test_kill9_storm_loses_nothing_and_never_doubles_a_maildir_copy(
        tmp_path: Path, dns_server: str) -> None:
    require("smtp-source")
    seed = int(time.time())
    options = parse_args(["--kills", "5", "--seed", str(seed), "--sources", "1", "--batch", "3",
                          "--pause", "0.05", "--gap-min", "0.2", "--gap-max", "0.8",
                          "--drain-timeout", "10", "--stall", "5",
                          "--workdir", str(tmp_path / "storm")])
    report = run(options, dns_server)
    print_report(report)  # shown by pytest when an assertion fails
    where = f"seed {seed}, {tmp_path / 'storm'}"
    assert sum(report.kills.values()) == 5
    assert report.messages["acked"] >= 20, where
    assert report.acked["maildir"] and report.acked["relay"], where
    assert report.lost == [], where
    assert report.maildir_duplicates == [], where
    assert report.delivered == report.acked, where
    assert report.stray == [], where
    assert report.stuck == [], where  # a dead worker's files are claimed without a restart


def test_sink_records_durably_and_refuses_on_demand(tmp_path: Path) -> None:
    proc, port = start_sink(tmp_path, "--fail-every", "2")

    def send(n: int) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.mail("a@x.test")
            client.rcpt(f"{n}b@y.test")
            client.rcpt("c@y.test")
            client.putcmd("data")
            client.getreply()
            client.send(f"Message-ID: <m{n}@x>\r\nX-Token: t{n}\r\n\r\n..dot\r\n.\r\n"
                        .encode())
            return client.getreply()

    try:
        first, second = send(1), send(2)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    assert first[0] == 250 and second[0] == 451
    (entry,) = read_records(str(tmp_path / "sink.jsonl"))
    assert (entry["from"], entry["rcpt"], entry["message_id"], entry["tokens"]) == \
        ("a@x.test", ["1b@y.test", "c@y.test"], "<m1@x>", ["t1"])
    assert entry["size"] == len(b"Message-ID: <m1@x>\r\nX-Token: t1\r\n\r\n.dot\r\n")


def test_smtp_source_log_gives_each_message_its_outcome() -> None:
    ledger = Ledger()
    parser = SmtpSourceParser(ledger, "s@x.test")
    log = ["MAIL FROM:<s@x.test>", "<<< 250 2.1.0 Ok", "RCPT TO:<1a@d.test>", "<<< 250 Ok",
           "DATA", "<<< 354 go", ".", "<<< 250 2.0.0 Ok: queued as 1",
           "MAIL FROM:<s@x.test>", "RCPT TO:<2a@d.test>", "DATA", "<<< 354 go", ".",
           "<<< 451 4.3.0 no", "MAIL FROM:<s@x.test>", "RCPT TO:<3a@d.test>", "DATA",
           "<<< 354 go", "."]
    for line in log:
        parser.line(f"/usr/sbin/smtp-source: {line}")
    parser.end()
    assert ledger.items == {("s@x.test", "1a@d.test"): Outcome.ACKED,
                            ("s@x.test", "2a@d.test"): Outcome.REFUSED,
                            ("s@x.test", "3a@d.test"): Outcome.DROPPED}


@pytest.mark.parametrize("copies", [0, 1, 2])
def test_count_finds_lost_and_doubled_maildir_copies(tmp_path: Path, copies: int) -> None:
    ledger = Ledger()
    ledger.record("s@x.test", ["1alice@example.test", "1bob@relay.test"], Outcome.ACKED)
    new = tmp_path / "example.test" / "alice" / "new"
    new.mkdir(parents=True)
    (tmp_path / "example.test" / "alice" / "tmp").mkdir()
    for n in range(copies):
        (new / f"m{n}").write_text("Return-Path: <s@x.test>\nDelivered-To: 1alice@example.test"
                                   "\n\nbody\n")
    sink = tmp_path / "sink.jsonl"
    sink.write_text("".join(json.dumps({"from": "s@x.test", "rcpt": ["1bob@relay.test"],
                                        "time": t}) + "\n" for t in (1.0, 2.0)))
    report = count(ledger, tmp_path / "example.test", sink, [(1.5, "worker1")])
    assert report.lost == ([] if copies else ["s@x.test 1alice@example.test"])
    assert len(report.maildir_duplicates) == (copies > 1)
    assert (report.relay_duplicates, report.relay_duplicate_causes) == (1, {"worker1 kill": 1})
