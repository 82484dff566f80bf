"""Ground truth for `mailgate replay --postfix-log`: varied sessions are played to a reference
Postfix 3.7; its log (the rebuilt transactions: refused recipients completely, accepted
messages without their HELO) predicts what mailgate with configuration B answers; the same
sessions played to mailgate with B get those answers wherever the log held what the checks
need, and the others say why they were not evaluated."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Server, reference_postfix, wait_until
from support.reference import Instance
from support.replayplay import by_tag, play_all, replay, scripts

SESSIONS = 200


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "replay")


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay-pf-tables")
    files = {"a_clients": "203.0.113.40/32 REJECT relay not welcome\n",
             "a_senders": "spam.example.org REJECT no spam from you\n",
             "b_clients": "192.0.2.0/24 REJECT spam network\n203.0.113.40/32 OK\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    return {name: root / name for name in files}


def config_a(t: dict[str, Path]) -> dict[str, str]:
    """The reference Postfix's: no DNS (it resolves through the system's resolver)."""
    return {"mynetworks": "127.0.0.1/32", "smtpd_helo_required": "yes",
            "smtpd_client_port_logging": "yes",
            "smtpd_sender_restrictions": f"check_sender_access texthash:{t['a_senders']}",
            "smtpd_recipient_restrictions": f"reject_non_fqdn_recipient, "
                                            f"reject_unauth_destination, "
                                            f"check_client_access cidr:{t['a_clients']}"}


def config_b(t: dict[str, Path], helo: bool) -> dict[str, str]:
    """mailgate's: DNS checks, a name check; (`helo`) HELO checks, which the log's accepted
    messages cannot feed."""
    out = {"mynetworks": "127.0.0.1/32", "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
           "smtpd_helo_required": "yes",
           "smtpd_sender_restrictions": "reject_non_fqdn_sender, reject_unknown_sender_domain",
           "smtpd_recipient_restrictions":
               f"reject_non_fqdn_recipient, reject_unauth_destination, check_client_access "
               f"cidr:{t['b_clients']}, reject_unknown_client_hostname, "
               "reject_rbl_client bl.mailgate.test"}
    if helo:
        out["smtpd_helo_restrictions"] = "reject_invalid_helo_hostname"
    return out


def rows_by_recipient(rows: list[dict[str, object]]) -> dict[tuple[int, str], dict[str, object]]:
    return {(tag, str(row["recipient"])): row for tag, found in by_tag(rows).items()
            for row in found}


@pytest.mark.interop
def test_postfix_log_predicts_what_b_answers(server_factory, postfix: Instance,  # type: ignore[no-untyped-def]
                                             tables: dict[str, Path], tmp_path: Path) -> None:
    plays = scripts(11, SESSIONS)
    skip = postfix.configure(config_a(tables))
    then = play_all(postfix.port, plays)
    messages = sum(1 for s in plays if s.data and 250 in then[s.tag])
    wait_until(lambda: len(re.findall(r"qmgr\[\d+\]: \w+: removed", "\n".join(
        postfix.log.read_text(errors="replace").splitlines()[skip:]))) >= messages, 60)
    log = tmp_path / "maillog"
    log.write_text("\n".join(postfix.log.read_text(errors="replace").splitlines()[skip:]) + "\n")

    results = {}
    for helo in (False, True):
        b: Server = server_factory(**config_b(tables, helo))
        b.write_config()
        predicted = rows_by_recipient(replay(b.root / "etc", [log], "--postfix-log",
                                            "--live-dns"))
        b.start()
        now = play_all(b.port, plays)
        b.stop()
        results[helo] = (predicted, now)

    predicted, now = results[False]
    assert len(predicted) > SESSIONS  # the log's recipients (not those of unsent messages)
    evaluated, reasons = 0, set()
    for s in plays:
        for recipient, then_code, now_code in zip(s.recipients, then[s.tag], now[s.tag],
                                                  strict=True):
            row = predicted.get((s.tag, recipient))
            if row is None:  # accepted, but no message: Postfix logs no recipient
                assert then_code == 250 and not s.data, (s, recipient)
                continue
            assert row["then"] == then_code, (s, recipient, row)
            if not row["evaluated"]:
                reasons.add(str(row["reason"]))
                continue
            evaluated += 1
            assert row["now"] == now_code, (s, recipient, now_code, row)
    assert evaluated > 0.7 * len(predicted)
    assert any("client name lookup" in reason for reason in reasons), reasons

    predicted, now = results[True]
    unknown = [row for row in predicted.values() if not row["evaluated"]]
    assert any("needs the HELO name" in str(row["reason"]) for row in unknown)
    for s in plays:
        for recipient, now_code in zip(s.recipients, now[s.tag], strict=True):
            row = predicted.get((s.tag, recipient))
            if row is not None and row["evaluated"]:
                assert row["now"] == now_code, (s, recipient, now_code, row)
