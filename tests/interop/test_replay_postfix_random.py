"""Replay's ground truth from a Postfix log over random configurations: a random
configuration A (without DNS checks: the reference resolves through the system) on the
reference Postfix 3.7 logs the sessions of support/replayplay; `replay --postfix-log
--live-dns -c B` (B random, DNS checks included) predicts each logged recipient's answer;
mailgate with B, played the same sessions, gives exactly those answers wherever the log
held what the checks need.

CI runs a few seeds; MAILGATE_REPLAY_PF_SEEDS="1-100" runs others. """

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Server, reference_postfix, wait_until
from support.differential import seeds
from support.reference import Instance
from support.replayconfigs import configuration
from support.replayplay import by_tag, play_all, replay, scripts

SEEDS = seeds(os.environ.get("MAILGATE_REPLAY_PF_SEEDS", "1-2"))
SESSIONS = 60


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "replay-random")


def logged(postfix: Instance, skip: int) -> str:
    return "\n".join(postfix.log.read_text(errors="replace").splitlines()[skip:]) + "\n"


def settled(postfix: Instance, text: str, sessions: int) -> bool:
    """Every session is over and the queue holds no message but held ones (`postqueue -p`
    marks them `!`): the log has all it will have."""
    if text.count(" disconnect from ") < sessions:
        return False
    listing = subprocess.run(["postqueue", "-c", str(postfix.etc), "-p"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    queued = re.findall(r"^([0-9A-F]{6,})([*!]?)\s", listing, re.MULTILINE)
    return all(mark == "!" for _, mark in queued)


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
def test_postfix_log_predicts_a_random_configuration(server_factory,  # type: ignore[no-untyped-def]
                                                     postfix: Instance, tmp_path: Path,
                                                     seed: int) -> None:
    rng = random.Random(seed)
    config_a = {**configuration(rng, dns=False), "smtpd_client_port_logging": "yes"}
    # (a DISCARD of a recipient accepted in a transaction that sent no message changes the
    # answers after it, and no log line shows that recipient: docs/replay.md)
    config_b = {name: value.replace("=DISCARD", "=DUNNO")
                for name, value in configuration(rng).items()}
    plays = scripts(seed, SESSIONS)
    skip = postfix.configure(config_a)
    then = play_all(postfix.port, plays)
    wait_until(lambda: settled(postfix, logged(postfix, skip), len(plays)), 60)
    log = tmp_path / "maillog"
    log.write_text(logged(postfix, skip))

    b: Server = server_factory(**config_b)
    b.write_config()
    rows = by_tag(replay(b.root / "etc", [log], "--postfix-log", "--live-dns"))
    b.start()
    now = play_all(b.port, plays)
    b.stop()

    setup = "A:\n" + "\n".join(f"{k} = {v}" for k, v in config_a.items()) + "\nB:\n" + \
        "\n".join(f"{k} = {v}" for k, v in config_b.items())
    wrong, evaluated = [], 0
    for s in plays:
        found = {str(row["recipient"]): row for row in rows.get(s.tag, [])}
        for recipient, then_code, now_code in zip(s.recipients, then[s.tag], now[s.tag],
                                                  strict=True):
            row = found.get(recipient)
            if row is None:  # not in the log: accepted without a message, or refused
                continue     # before any transaction (the greeting, a missing HELO)
            if row["then"] != then_code:
                wrong.append(f"then {then_code}: {s} {row}")
            elif row["evaluated"]:
                evaluated += 1
                if row["now"] != now_code:
                    wrong.append(f"now {now_code}: {s} {row}")
    assert not wrong, f"seed {seed}\n{setup}\n" + "\n".join(wrong)
