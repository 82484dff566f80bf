"""Ground truth for `mailgate replay`: varied sessions (clean, spammy, DNS-listed clients,
unknown users, non-FQDN and invalid names, improper pipelining) are played to mailgate with
configuration A and the transaction journal on; `replay -c B` predicts what B answers each
recipient; the same sessions played to mailgate with B get exactly those answers.

With the DNS answers recorded then, a check asking what A never asked is not evaluated; with
`--live-dns` every recipient is evaluated."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server, wait_until
from support.replayplay import by_tag, compare, play_all, replay, scripts

SESSIONS = 300
TEXT = "REPLAY"


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay-tables")
    files = {"a_clients": "203.0.113.40/32 REJECT relay not welcome\n",
             "b_clients": "192.0.2.0/24 REJECT spam network\n203.0.113.40/32 OK\n",
             "b_senders": "spam.example.org REJECT no spam from you\n",
             "eod_clients": "198.51.100.9 REJECT not at the end\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    return {name: root / name for name in files}


def config_a(t: dict[str, Path], journal: Path) -> dict[str, str]:
    return {"mynetworks": "127.0.0.1/32", "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_helo_required": "yes", "transaction_journal": str(journal),
            "smtpd_recipient_restrictions":
                f"reject_non_fqdn_recipient, reject_unauth_destination, check_client_access "
                f"cidr:{t['a_clients']}, reject_rbl_client bl.mailgate.test, "
                "reject_unknown_sender_domain"}


def config_b1(t: dict[str, Path]) -> dict[str, str]:
    """Stricter, with smtpd_delay_reject = yes: checks A never made."""
    return {"mynetworks": "127.0.0.1/32", "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_helo_required": "yes",
            "smtpd_helo_restrictions": "reject_invalid_helo_hostname, "
                                       "reject_non_fqdn_helo_hostname",
            "smtpd_sender_restrictions": f"reject_non_fqdn_sender, check_sender_access "
                                         f"texthash:{t['b_senders']}, "
                                         "reject_unknown_sender_domain",
            "smtpd_recipient_restrictions":
                f"reject_non_fqdn_recipient, reject_unauth_destination, check_client_access "
                f"cidr:{t['b_clients']}, reject_unknown_client_hostname, "
                "reject_rbl_client bl.mailgate.test",
            "smtpd_data_restrictions": "reject_unauth_pipelining, "
                                       "reject_multi_recipient_bounce"}


def config_b2(t: dict[str, Path]) -> dict[str, str]:
    """smtpd_delay_reject = no: refusals at the greeting, HELO and MAIL."""
    return {"mynetworks": "127.0.0.1/32", "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_helo_required": "yes", "smtpd_delay_reject": "no",
            "smtpd_client_restrictions": f"check_client_access cidr:{t['b_clients']}, "
                                         "reject_rbl_client bl.mailgate.test",
            "smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname",
            "smtpd_sender_restrictions": f"reject_non_fqdn_sender, check_sender_access "
                                         f"texthash:{t['b_senders']}",
            "smtpd_recipient_restrictions": "reject_unauth_destination",
            "smtpd_end_of_data_restrictions": f"check_client_access "
                                              f"texthash:{t['eod_clients']}"}


UNSENT = "if the client sends it"  # a message A never let it send, which B refuses


def reasons(predicted: dict[int, list[dict[str, object]]]) -> set[str]:
    return {str(row["reason"]) for rows in predicted.values() for row in rows
            if not row["evaluated"]}


def test_replay_predicts_what_b_answers(server_factory, tables: dict[str, Path],  # type: ignore[no-untyped-def]
                                        tmp_path: Path) -> None:
    plays = scripts(int(os.environ.get("MAILGATE_REPLAY_SEED", "24")), SESSIONS)
    journal = tmp_path / "journal"
    a: Server = server_factory(**config_a(tables, journal)).start()
    then = play_all(a.port, plays)
    a.stop()  # the journal is complete once the workers are gone
    b1: Server = server_factory(**config_b1(tables))
    b2: Server = server_factory(**config_b2(tables))
    b1.write_config()
    b2.write_config()

    recorded = by_tag(replay(b1.root / "etc", [journal]))
    assert sorted(recorded) == sorted(then)
    for tag, codes in then.items():  # the journal says what A answered
        assert [row["then"] for row in recorded[tag]] == codes, tag
    live_dns = by_tag(replay(b1.root / "etc", [journal], "--live-dns"))
    predicted_b2 = by_tag(replay(b2.root / "etc", [journal]))

    b1.start()
    now_b1 = play_all(b1.port, plays)
    b1.stop()
    b2.start()
    now_b2 = play_all(b2.port, plays)

    evaluated, unknown, wrong = compare(recorded, now_b1)
    assert not wrong, "\n".join(wrong)
    assert evaluated > 2 * unknown > 0  # the answers A never asked for: not evaluated
    assert any(reason.startswith("DNS ") for reason in reasons(recorded))
    assert all(reason.startswith("DNS ") or UNSENT in reason
               for reason in reasons(recorded))
    evaluated, unknown, wrong = compare(live_dns, now_b1)
    assert not wrong, "\n".join(wrong)
    assert all(UNSENT in reason for reason in reasons(live_dns))
    evaluated, unknown, wrong = compare(predicted_b2, now_b2)
    assert not wrong, "\n".join(wrong)
    assert evaluated > 2 * unknown
    changes = {(row["then"] < 400, row["now"] < 400) for rows in live_dns.values()  # type: ignore[operator]
               for row in rows if row["evaluated"]}
    assert changes == {(True, True), (True, False), (False, False), (False, True)}


def test_journal_is_rotated_with_the_mail_log(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Rename the journal, `mailgate postlog reopen`: each record is in one of the files."""
    journal = tmp_path / "journal"
    server: Server = server_factory(transaction_journal=str(journal)).start()

    def session(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
            smtp.sendmail(f"s{n}@example.test", ["bob@example.test"],
                          f"Subject: rotate {n}\r\n\r\nbody\r\n".encode())

    session(1)
    server.wait_log(r"^smtpd: disconnect from")
    wait_until(lambda: journal.exists() and journal.read_text().count("\n") == 1)
    journal.rename(tmp_path / "journal.1")
    out = subprocess.run([sys.executable, "-m", "mailgate.cli", "postlog", "-c",
                          str(server.root / "etc"), "reopen"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    wait_until(journal.exists)  # the master made it, the workers reopened it
    session(2)
    server.wait_log(r"^smtpd: disconnect from", count=2)
    wait_until(lambda: journal.read_text().count("\n") == 1)
    assert '"sender":"s1@example.test"' in (tmp_path / "journal.1").read_text()
    assert '"sender":"s2@example.test"' in journal.read_text()
