"""The log tools administrators run on Postfix's log count mailgate's log alike: the same
sessions (delivered and rejected mail) played to the reference Postfix and to mailgate give
the same pflogsumm totals (`syslog_name = postfix`, or `--syslog-name=mailgate`), the same
postfix_exporter counters (`syslog_name = postfix`), and `mailgate report` agrees with both."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import SHARED, Server, free_port, port_accepts, require, wait_until
from interop.test_differential import run
from interop.test_fail2ban import SESSIONS, SETTINGS
from support import reference
from support.metrics import Samples, scrape, value

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
MAIL = ["EHLO ok.example", "MAIL FROM:<s@ok.example>", "RCPT TO:<alice@example.test>",
        "RCPT TO:<bob@example.test>", "DATA", "Subject: differential", "", "body", ".", "QUIT"]
TOTALS = ("received", "delivered", "deferred", "bounced", "rejected")


def grand_totals(text: str) -> dict[str, int]:
    """The grand totals of pflogsumm's or `mailgate report`'s text (the same layout)."""
    found = {}
    for name in TOTALS:
        m = re.search(rf"^\s+(\d+)\s+{name}\b", text, re.M)
        assert m, text
        found[name] = int(m.group(1))
    return found


def ours(log: Path) -> tuple[dict[str, int], str]:
    """`mailgate report`'s grand totals (pflogsumm's names) and its whole text."""
    out = subprocess.run([sys.executable, "-m", "mailgate.cli", "report", str(log)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return grand_totals(out), out


def section(text: str, title: str) -> list[str]:
    """The rows of one section of the text report."""
    part = text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
    return [x.strip() for x in part.splitlines()[1:]]


def totals(log: Path, *options: str) -> dict[str, int]:
    return grand_totals(subprocess.run([require("pflogsumm"), *options, str(log)],
                                       capture_output=True, text=True, timeout=120,
                                       check=True).stdout)


class Exporter:
    """prometheus-postfix-exporter tailing one log file, on a loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [require("prometheus-postfix-exporter"),
             f"--web.listen-address=127.0.0.1:{self.port}", f"--postfix.logfile_path={log}",
             f"--postfix.showq_path={log.parent / 'no-showq'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_accepts(self.port))
        # It reads from the end of the file on: ready once it holds the log open.
        wait_until(lambda: str(log) in self.open_files())

    def open_files(self) -> set[str]:
        fds = Path(f"/proc/{self.proc.pid}/fd")
        out = set()
        for fd in fds.iterdir() if fds.exists() else []:
            try:
                out.add(os.readlink(fd))
            except OSError:
                continue
        return out

    def samples(self) -> Samples:
        return scrape(f"http://127.0.0.1:{self.port}/metrics")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Logs:
    """The same sessions' logs: Postfix's, mailgate's as `postfix`, mailgate's own name."""

    postfix: Path
    named: Path
    default: Path
    exporters: dict[str, Exporter]


def _delivered(log: Path, start: int = 0) -> bool:  # two messages, two recipients each
    return sum("status=sent" in x for x in log.read_text().splitlines()[start:]) >= 4


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logs]:
    require("postfix")
    if not REFERENCE.exists():
        pytest.skip("shared/postfix/reference-postfix.sh not present")
    root = tmp_path_factory.mktemp("logtools")
    postfix = reference.Instance(REFERENCE, root / "ref", free_port())
    base = reference.read_settings(DATA / "main.cf")
    named = Server(root / "named", extra={**base, **SETTINGS, "syslog_name": "postfix"})
    default = Server(root / "default", extra={**base, **SETTINGS})
    exporters: dict[str, Exporter] = {}
    try:
        skip = postfix.configure({**base, **SETTINGS})
        named.start()
        default.start()
        exporters = {"postfix": Exporter(postfix.log), "named": Exporter(named.log_path)}
        sessions = [MAIL, *SESSIONS, MAIL]
        run(postfix.port, sessions, postfix.log, skip)
        run(named.port, sessions, named.log_path)
        run(default.port, sessions, default.log_path)
        wait_until(lambda: _delivered(postfix.log, skip))
        for log in (named.log_path, default.log_path):
            wait_until(lambda log=log: _delivered(log))  # type: ignore[misc]
        theirs = root / "postfix.log"
        theirs.write_text("".join(postfix.log.read_text().splitlines(keepends=True)[skip:]))
        yield Logs(theirs, named.log_path, default.log_path, exporters)
    finally:
        for exporter in exporters.values():
            exporter.stop()
        named.stop()
        default.stop()
        postfix.stop()


@pytest.mark.interop
def test_pflogsumm_totals_like_postfix(logs: Logs) -> None:
    want = totals(logs.postfix)
    assert want["received"] == 2 and want["delivered"] == 4 and want["rejected"] >= 5
    assert totals(logs.named) == want
    assert totals(logs.default, "--syslog-name=mailgate") == want


@pytest.mark.interop
def test_postfix_exporter_counts_like_postfix(logs: Logs) -> None:
    """postfix_smtpd_messages_rejected_total by code and postfix_smtpd_connects_total from
    the exporter tailing each log (it reads what is written after it started)."""
    wanted = ("postfix_smtpd_messages_rejected_total", "postfix_smtpd_connects_total")
    sessions = len(SESSIONS) + 2

    def counts(name: str) -> Samples:
        return {k: v for k, v in logs.exporters[name].samples().items() if k[0] in wanted}

    for name in logs.exporters:
        wait_until(lambda name=name: value(counts(name),  # type: ignore[misc]
                                           "postfix_smtpd_connects_total") == sessions)
    theirs, ours = counts("postfix"), counts("named")
    rejected = {k: v for k, v in theirs.items() if k[0] == wanted[0]}
    assert sum(rejected.values()) >= 5 and len(rejected) >= 2, theirs  # several codes
    assert ours == theirs


@pytest.mark.interop
def test_report_agrees_with_pflogsumm(logs: Logs) -> None:
    """`mailgate report` gives pflogsumm's totals on Postfix's log and on mailgate's (either
    name), and the same reject breakdowns for the same sessions."""
    want = totals(logs.postfix)
    theirs, text = ours(logs.postfix)
    assert theirs == want
    for log in (logs.named, logs.default):
        found, mine = ours(log)
        assert found == want
        for title in ("Rejects by code", "Rejects by stage", "Rejects by restriction",
                      "Top rejected clients", "Top rejected networks (/24, /64)"):
            assert section(mine, title) == section(text, title), title
    assert section(text, "Rejects by restriction")[0] == "4  reject_unlisted_recipient"
