"""Replay's ground truth over random configurations: a random configuration A records the
sessions of support/replayplay in the journal; `replay -c B` (B random too) predicts each
recipient's answer, with the DNS answers recorded then and with --live-dns; the sessions
played live to B get exactly the predicted answers wherever a prediction was made.

CI runs a few seeds; MAILGATE_REPLAY_RANDOM_SEEDS="1-200" (or "3 7 9") runs others."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

from conftest import Server
from support.differential import seeds
from support.replayconfigs import configuration
from support.replayplay import by_tag, compare, play_all, replay, scripts

SEEDS = seeds(os.environ.get("MAILGATE_REPLAY_RANDOM_SEEDS", "1-3"))
SESSIONS = int(os.environ.get("MAILGATE_REPLAY_RANDOM_SESSIONS", "60"))


@pytest.mark.parametrize("seed", SEEDS)
def test_replay_predicts_a_random_configuration(server_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                seed: int) -> None:
    rng = random.Random(seed)
    config_a, config_b = configuration(rng), configuration(rng)
    plays = [dataclasses.replace(s, persistent=rng.random() < 0.5)
             for s in scripts(seed, SESSIONS)]
    journal = tmp_path / "journal"
    a: Server = server_factory(**config_a, transaction_journal=str(journal)).start()
    then = play_all(a.port, plays)
    a.stop()  # the journal is complete once the workers are gone
    b: Server = server_factory(**config_b)
    b.write_config()
    recorded = by_tag(replay(b.root / "etc", [journal]))
    live_dns = by_tag(replay(b.root / "etc", [journal], "--live-dns"))
    b.start()
    now = play_all(b.port, plays)
    b.stop()

    setup = "\n".join(f"{k} = {v}" for k, v in config_b.items())
    for tag, codes in then.items():  # the journal says what A answered
        if tag not in recorded:  # refused at the greeting, and the client quit at once
            assert not plays[tag].persistent and codes[0] >= 400 and set(codes) == {codes[0]}
            del now[tag]
            continue
        assert [row["then"] for row in recorded[tag]] == codes, (seed, tag)
    for predicted in (recorded, live_dns):
        evaluated, _, wrong = compare(predicted, now)
        assert not wrong, f"seed {seed}\n{setup}\n" + "\n".join(wrong)
    assert evaluated > 0


def test_what_smtpd_refused_itself_is_recorded_and_replayed(server_factory,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    """A client refused at the greeting that goes on (its MAIL and RCPTs get 503 access
    denied), a MAIL refused for want of HELO (smtpd_helo_required) with the RCPTs after it,
    recipients over smtpd_recipient_limit: each is in the journal with the recipients it
    was for, and a candidate that accepts them predicts what it answers."""
    journal = tmp_path / "journal"
    a: Server = server_factory(
        mynetworks="127.0.0.1/32", smtpd_authorized_xclient_hosts="127.0.0.0/8",
        smtpd_delay_reject="no", smtpd_helo_required="yes", smtpd_recipient_limit="2",
        smtpd_client_restrictions="permit_mynetworks, check_client_access "
                                  "cidr:{{192.0.2.0/24 REJECT no}}",
        smtpd_helo_restrictions="check_helo_access inline:{{localhost=REJECT}}",
        soft_bounce="yes", transaction_journal=str(journal)).start()
    base = scripts(1, 3)
    plays = [dataclasses.replace(base[0], addr="192.0.2.5", name="mx.spam.example",
                                 recipients=("alice@example.test", "bob@example.test"),
                                 persistent=True, pipelined=False),
             dataclasses.replace(base[1], addr="198.51.100.9", name="mail.example.org",
                                 helo="localhost", sender="s@mailgate.test",
                                 recipients=("alice@example.test",), pipelined=False),
             dataclasses.replace(base[2], addr="198.51.100.9", name="mail.example.org",
                                 helo="mail.example.org", sender="s@mailgate.test",
                                 recipients=("alice@example.test", "bob@example.test",
                                             "postmaster@example.test"), pipelined=False)]
    then = play_all(a.port, plays)
    a.stop()
    assert then == {0: [454, 454], 1: [403], 2: [250, 250, 452]}  # (soft_bounce: 4xx)
    b: Server = server_factory(mynetworks="127.0.0.1/32",
                               smtpd_authorized_xclient_hosts="127.0.0.0/8")
    b.write_config()
    predicted = by_tag(replay(b.root / "etc", [journal]))
    assert {tag: [row["then"] for row in rows] for tag, rows in predicted.items()} == then
    assert [row["recipient"] for row in predicted[0]] == ["alice@example.test",
                                                          "bob@example.test"]
    b.start()
    now = play_all(b.port, plays)
    evaluated, unknown, wrong = compare(predicted, now)
    assert not wrong and unknown == 0 and evaluated == 6, wrong
    assert now == {0: [250, 250], 1: [250], 2: [250, 250, 250]}
