"""pflogsumm counts mailgate's log as it counts Postfix's: the same sessions (delivered and
rejected mail) to the reference Postfix and to mailgate give the same received, delivered
and rejected totals (`syslog_name = postfix`, or `--syslog-name=mailgate`)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SHARED, free_port, require, wait_until
from interop.test_differential import run
from interop.test_fail2ban import SESSIONS, SETTINGS
from support import reference

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
MAIL = ["EHLO ok.example", "MAIL FROM:<s@ok.example>", "RCPT TO:<alice@example.test>",
        "RCPT TO:<bob@example.test>", "DATA", "Subject: differential", "", "body", ".", "QUIT"]
TOTALS = ("received", "delivered", "deferred", "bounced", "rejected")


def totals(log: Path, *options: str) -> dict[str, int]:
    out = subprocess.run([require("pflogsumm"), *options, str(log)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    found = {}
    for name in TOTALS:
        m = re.search(rf"^\s+(\d+)\s+{name}\b", out, re.M)
        assert m, out
        found[name] = int(m.group(1))
    return found


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reference.Instance]:
    require("postfix")
    if not REFERENCE.exists():
        pytest.skip("shared/postfix/reference-postfix.sh not present")
    instance = reference.Instance(REFERENCE, tmp_path_factory.mktemp("pfl") / "ref",
                                  free_port())
    yield instance
    instance.stop()


@pytest.mark.interop
def test_pflogsumm_totals_like_postfix(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                                       tmp_path: Path) -> None:
    base = reference.read_settings(DATA / "main.cf")
    sessions = [MAIL, *SESSIONS, MAIL]
    skip = postfix.configure({**base, **SETTINGS})
    run(postfix.port, sessions, postfix.log, skip)

    def delivered(log: Path, start: int = 0) -> bool:  # two messages, two recipients each
        return sum("status=sent" in x for x in log.read_text().splitlines()[start:]) >= 4

    wait_until(lambda: delivered(postfix.log, skip))
    theirs = tmp_path / "postfix.log"
    theirs.write_text("".join(postfix.log.read_text().splitlines(keepends=True)[skip:]))
    named = server_factory(**{**base, **SETTINGS, "syslog_name": "postfix"}).start()
    run(named.port, sessions, named.log_path)
    default = server_factory(**{**base, **SETTINGS}).start()
    run(default.port, sessions, default.log_path)
    for server in (named, default):
        wait_until(lambda server=server: delivered(server.log_path))  # type: ignore[misc]
    want = totals(theirs)
    assert want["received"] == 2 and want["delivered"] == 4 and want["rejected"] >= 5
    assert totals(named.log_path) == want
    assert totals(default.log_path, "--syslog-name=mailgate") == want
