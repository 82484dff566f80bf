"""Differential: the same dialogues to mailgate and to a live Postfix 3.7 give the same smtpd
log lines (queue ids, process ids and time stamps aside)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from conftest import SHARED, free_port, require, wait_until
from support import reference
from support.dialogue import parse_script, play, script_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
SCRIPTS = sorted(DATA.glob("*.in"))
REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
smtpd_lines = reference.smtpd_lines


def _play_all(port: int, sessions: list[list[tuple[str, bytes, bool]]], log: Path) -> list[str]:
    """Play the sessions one after the other: each must be logged as disconnected before the
    next starts, so that log lines of different sessions never interleave."""
    for done, session in enumerate(sessions, 1):
        play(port, session)
        wait_until(lambda n=done: sum("disconnect from" in x for x in smtpd_lines(log)) >= n)  # type: ignore[misc]
    return smtpd_lines(log)


@pytest.mark.interop
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_smtpd_log_lines_match_postfix(server_factory, tmp_path: Path, script: Path) -> None:  # type: ignore[no-untyped-def]
    require("postfix")
    if not REFERENCE.exists():
        pytest.skip("shared/postfix/reference-postfix.sh not present")
    text = script.read_text()
    settings = script_settings(text)
    sessions = parse_script(text)
    ref = tmp_path / "ref"
    port = free_port()
    base = reference.read_settings(DATA / "main.cf")
    fragment = reference.merged_fragment(tmp_path / "fragment.cf", base, settings)
    reference.start(REFERENCE, ref, port, fragment)
    try:
        postfix = _play_all(port, sessions, ref / "maillog")
    finally:
        reference.stop(REFERENCE, ref)
    server = server_factory(**{**base, **settings}).start()
    mailgate = _play_all(server.port, sessions, server.log_path)
    if mailgate != postfix:
        diff = "\n".join(difflib.unified_diff(postfix, mailgate, "postfix", "mailgate",
                                              lineterm=""))
        pytest.fail(f"{script.name}: smtpd log lines differ\n{diff}\n--- postfix:\n"
                    + "\n".join(postfix) + "\n--- mailgate:\n" + "\n".join(mailgate))
