"""mailgate answers scripted SMTP dialogues exactly as the recorded Postfix 3.7.11 did."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from support.dialogue import normalize, parse_script, play, script_settings
from support.reference import read_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
SCRIPTS = sorted(DATA.glob("*.in"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_dialogue_matches_postfix(server_factory, script: Path) -> None:  # type: ignore[no-untyped-def]
    text = script.read_text()
    server = server_factory(**{**read_settings(DATA / "main.cf"), **script_settings(text)}).start()
    got = []
    for session in parse_script(text):
        got.append("\n".join(normalize(play(server.port, session), "mx.example.test")))
    actual = "\n======\n".join(got) + "\n"
    expected = script.with_suffix(".ref").read_text()
    if actual != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(),
                                              "postfix", "mailgate", lineterm=""))
        pytest.fail(f"{script.name}: replies differ from Postfix 3.7.11\n{diff}")
