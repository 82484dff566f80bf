"""`mailgate replay` without a network: each stage a recipient can be refused at (connect,
HELO, MAIL, RCPT, DATA, end of data) as smtpd refuses it, the checks that cannot be
evaluated (a fact the record lacks, a DNS answer it did not record, a policy server), the
reports (text, JSON lines, HTML), the time bounds, and the same answers from several
processes as from one."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgate.config.config import Config
from mailgate.dns.resolver import OK, Answer, Record
from mailgate.engine.context import Client
from mailgate.engine.reply import Rule
from mailgate.journal.record import Outcome, Transaction, encode
from mailgate.replay import command
from mailgate.replay.replayer import Options, Replayer
from mailgate.replay.simulate import Now, then

SRC = Path(__file__).resolve().parents[2] / "src" / "mailgate"
REFUSED = Outcome(550, "5.1.1", "<x>: Recipient address rejected: no", Rule("reject"))

B = """\
mydestination = example.test
local_recipient_maps = inline:{alice=x, bob=x, carol=x}
smtpd_delay_reject = no
smtpd_helo_required = yes
smtpd_client_restrictions = check_client_access inline:{{192.0.2.66=REJECT bad client}}
smtpd_helo_restrictions = reject_non_fqdn_helo_hostname
smtpd_sender_restrictions = check_sender_access inline:{{bad@sender.example=REJECT bad}}
smtpd_recipient_restrictions = reject_unauth_destination
smtpd_data_restrictions = reject_unauth_pipelining
smtpd_end_of_data_restrictions = check_client_access inline:{{192.0.2.77=REJECT at the end}}
"""


def tx(addr: str = "192.0.2.1", helo: str | None = "mx.sender.example",
       sender: str = "s@sender.example", rcpts: tuple[str, ...] = ("alice@example.test",),
       then_codes: tuple[int, ...] = (250,), data: bool = True, **more: object) -> Transaction:
    out = Transaction(1_800_000_000.0, Client("mx.sender.example", addr, 2525), sender,
                      list(rcpts), helo=helo, data=data, end_of_data=data, **more)  # type: ignore[arg-type]
    out.then.rcpt = [Outcome(250) if code == 250 else REFUSED for code in then_codes]
    if data and 250 in then_codes:
        out.then.data, out.then.eod = Outcome(354), Outcome(250)
    return out


@pytest.fixture
def made() -> Iterator[list[Replayer]]:
    replayers: list[Replayer] = []
    yield replayers
    for r in replayers:
        r.close()


def replayer(made: list[Replayer], tmp_path: Path, text: str = B) -> Replayer:
    (tmp_path / "main.cf").write_text(text)
    made.append(Replayer(Config.load(str(tmp_path), []), Options()))
    return made[-1]


def run(r: Replayer, t: Transaction) -> list[Now]:
    return r.loop.run_until_complete(r.evaluate(t))


def answer(now: list[Now]) -> list[tuple[str, int | None, str]]:
    return [(n.stage, n.outcome.code if n.outcome else None,
             n.outcome.rule.restriction if n.outcome and n.outcome.rule else "")
            for n in now]


def test_each_stage_refuses_as_smtpd(made: list[Replayer], tmp_path: Path) -> None:
    r = replayer(made, tmp_path)
    assert answer(run(r, tx(addr="192.0.2.66"))) == [("connect", 554, "check_client_access")]
    assert answer(run(r, tx(helo="nodots"))) == [("helo", 503, "reject_non_fqdn_helo_hostname")]
    assert answer(run(r, tx(helo=None))) == [("helo", 503, "")]
    assert answer(run(r, tx(sender="bad@sender.example"))) == [
        ("mail", 554, "check_sender_access")]
    assert answer(run(r, tx(rcpts=("alice@example.test", "x@other.example"),
                            then_codes=(250, 250)))) == [
        ("rcpt", 250, ""), ("rcpt", 454, "defer_unauth_destination")]
    assert answer(run(r, tx(pipelining_from=0))) == [("data", 503, "reject_unauth_pipelining")]
    assert answer(run(r, tx(addr="192.0.2.77"))) == [("end-of-data", 554, "check_client_access")]
    assert answer(run(r, tx(addr="192.0.2.77", data=False))) == [("rcpt", 250, "")]


def test_a_message_it_could_not_send_then_is_not_a_certain_refusal(made: list[Replayer],
                                                                  tmp_path: Path) -> None:
    r = replayer(made, tmp_path)
    never = tx(addr="192.0.2.77", then_codes=(550,), data=False)
    now = run(r, never)
    assert now[0].outcome is None and "if the client sends it" in now[0].reason
    assert answer(run(r, tx(then_codes=(550,), data=False))) == [("rcpt", 250, "")]


def test_what_cannot_be_evaluated(made: list[Replayer], tmp_path: Path) -> None:
    r = replayer(made, tmp_path, "mydestination = example.test\n"
                           "smtpd_helo_restrictions = reject_invalid_helo_hostname\n"
                           "smtpd_sender_restrictions = reject_unknown_sender_domain\n"
                           "smtpd_recipient_restrictions = check_policy_service "
                           "inet:127.0.0.1:9, permit\n")
    assert "needs the HELO name" in run(r, tx(missing=frozenset({"helo"})))[0].reason
    assert run(r, tx())[0].reason == ("DNS MX sender.example was not recorded (--live-dns "
                                      "asks now)")
    answers = {("sender.example", "MX"): Answer(OK, (Record("sender.example", 60, "MX",
                                                            "mx.sender.example", 10),))}
    assert run(r, tx(dns=answers))[0].reason == "check_policy_service asks a policy server"


def test_then_is_the_first_refusal_on_the_way() -> None:
    t = tx(rcpts=("a@example.test", "b@example.test"), then_codes=(250, 550))
    t.then.eod = Outcome(554, "5.7.1", "end", Rule("check_client_access"))
    assert [o.code for o in then(t)] == [554, 550]
    t = tx(rcpts=(), then_codes=())
    t.then.mail = Outcome(554, "5.7.1", "no", None)
    assert [o.code for o in then(t)] == [554]


def journal(tmp_path: Path, count: int = 40) -> Path:
    path = tmp_path / "journal"
    with path.open("w") as out:
        for n in range(count):
            t = tx(addr=("192.0.2.66", "192.0.2.1", "192.0.2.77")[n % 3],
                   rcpts=("alice@example.test", f"u{n}@other.example"), then_codes=(250, 250))
            t.time += n * 3600
            out.write(encode(t))
        out.write("not a record\n")
    return path


def replay(tmp_path: Path, *names: Path, **options: object) -> tuple[str, str]:
    (tmp_path / "main.cf").write_text(B)
    out, err = io.StringIO(), io.StringIO()
    code = command.run(Config.load(str(tmp_path), []), str(tmp_path), [str(n) for n in names],
                       out=out, err=err, **options)  # type: ignore[arg-type]
    assert code == 0, err.getvalue()
    return out.getvalue(), err.getvalue()


def test_the_reports(tmp_path: Path) -> None:
    path = journal(tmp_path)
    text, err = replay(tmp_path, path, html_path=str(tmp_path / "r.html"))
    assert "1 lines are not journal records" in err
    assert "40 transactions, 80 recipients" in text
    # 192.0.2.66 at connect (14 x 2), relaying (26), 192.0.2.77 at the end (13)
    assert re.search(r"^\s+67\s+would now be refused", text, re.M)
    assert "check_client_access inline:{{192.0.2.66=REJECT bad client}} 192.0.2.66" in text
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="change-refused"><b>67</b>' in page
    lines, _ = replay(tmp_path, path, json_out=True)
    rows = [json.loads(line) for line in lines.splitlines()]
    assert len(rows) == 80
    first = rows[0]
    assert {k: first[k] for k in ("client_address", "sender", "recipient", "then", "now",
                                  "rule", "evaluated", "stage")} == {
        "client_address": "192.0.2.66", "sender": "s@sender.example",
        "recipient": "alice@example.test", "then": 250, "now": 554,
        "rule": "check_client_access", "evaluated": True, "stage": "connect"}
    later, _ = replay(tmp_path, path, json_out=True, since="1970-01-01",
                      until=rows[10]["time"].replace("T", " "))
    assert 0 < len(later.splitlines()) < 80


def test_several_processes_answer_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = journal(tmp_path, 3000)
    one, _ = replay(tmp_path, path, json_out=True, jobs=1)
    monkeypatch.setattr(command, "INLINE", 0)
    monkeypatch.setattr(command, "WINDOW", 1)
    many, _ = replay(tmp_path, path, json_out=True, jobs=2)
    assert one == many and len(one.splitlines()) == 6000


def test_facts_outside_the_cache_key_are_read_by_no_restriction() -> None:
    """The replay caches an evaluation by a record's facts, which leave out the client port
    and the sizes: only check_policy_service reads them (never run by a replay) and a DNS
    list reply template's $client_port (the replay then does not cache)."""
    for module in (SRC / "engine").glob("*.py"):
        if module.name in ("policy.py", "context.py"):
            continue
        for line in module.read_text().splitlines():
            if re.search(r"\.port\b|\.size\b", line):
                assert module.name == "dnsbl.py" and '"client_port": ' in line, line


def test_no_cache_when_a_list_reply_shows_the_client_port(made: list[Replayer],
                                                          tmp_path: Path) -> None:
    text = "mydestination = example.test\n"
    assert replayer(made, tmp_path, text).cacheable
    assert not replayer(made, tmp_path, text + "default_rbl_reply = $client_port\n").cacheable
    assert not replayer(made, tmp_path, text + "rbl_reply_maps = inline:{x=y}\n").cacheable


def test_guards_leave_live_checks_alone(made: list[Replayer], tmp_path: Path) -> None:
    """A replay's guards, installed in a process that also runs live checks (these tests),
    change nothing for them."""
    import asyncio

    from mailgate.app import build_engine, build_resolver
    from mailgate.engine.context import CheckState
    from mailgate.maps import default_registry

    replayer(made, tmp_path)  # installs them
    (tmp_path / "main.cf").write_text("mydestination = example.test\n"
                                      "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n"
                                      "smtpd_recipient_restrictions = check_policy_service "
                                      "inet:127.0.0.1:9\n")
    cfg = Config.load(str(tmp_path), [])
    registry = default_registry()
    engine, _ = build_engine(cfg, registry, build_resolver(cfg, registry, frozenset()),
                             lambda text: None)
    st = CheckState(Client("mx.example", "192.0.2.1", 0), helo="nodots", sender="s@x.example",
                    where="RCPT")
    assert asyncio.run(engine.check_helo(st, "nodots")).reply is not None
    st.helo = "mx.example"
    verdict = asyncio.run(engine.check_rcpt(st, "a@example.test"))
    assert verdict.reply is not None and verdict.reply.code == 451  # the server is not there
