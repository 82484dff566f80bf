"""`mailgate replay` without a network: each stage a recipient can be refused at (connect,
HELO, MAIL, RCPT, DATA, end of data) as smtpd refuses it, the checks that cannot be
evaluated (a fact the record lacks, a DNS answer it did not record, a policy server), the
reports (text, JSON lines, HTML), the time bounds, the same answers from several
processes as from one, and the replay's fast paths (the cache, a line read in parts) giving
what the plain ones give."""

from __future__ import annotations

import gzip
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
from mailgate.journal.parts import Answers, decode_facts, decode_then, read_head
from mailgate.journal.record import (
    FACTS,
    Outcome,
    RecordError,
    Transaction,
    decode,
    decode_answer,
    encode,
    facts_key,
)
from mailgate.replay import command
from mailgate.replay.cache import Evaluations
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


def test_a_recipient_not_evaluable_leaves_the_message_unknown(made: list[Replayer],
                                                             tmp_path: Path) -> None:
    """The third RCPT needs the client name lookup's result (a Postfix log lacks it): the
    second, accepted, meets DATA next, which is not evaluated either (its answer is the
    message's); the first, refused, stays."""
    r = replayer(made, tmp_path, "mydestination = example.test\n"
                           "local_recipient_maps = inline:{alice=x, bob=x}\n"
                           "smtpd_recipient_restrictions = check_recipient_access "
                           "inline:{{bob@example.test=reject_unknown_reverse_client_hostname}, "
                           "{carol@example.test=REJECT}}\n"
                           "smtpd_data_restrictions = defer_if_permit\n")
    three = ("carol@example.test", "alice@example.test", "bob@example.test")
    lacking = frozenset({"client_name_status"})
    now = run(r, tx(rcpts=three, then_codes=(250, 250, 250), missing=lacking))
    assert answer(now)[0] == ("rcpt", 554, "check_recipient_access")
    assert [n.outcome for n in now[1:]] == [None, None]
    assert all("client name lookup" in n.reason for n in now[1:])
    assert answer(run(r, tx(rcpts=three, then_codes=(250, 250, 250), data=False,
                            missing=lacking)))[1] == ("rcpt", 250, "")  # no message then


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


def json_rows(r: Replayer, *records: Transaction) -> list[dict[str, object]]:
    part = r.lines([encode(t).rstrip("\n") for t in records])
    return [json.loads(line) for line in part.text.splitlines()]


def test_the_same_facts_with_another_then_are_evaluated_for_it(made: list[Replayer],
                                                                tmp_path: Path) -> None:
    """Whether the client could send its message depends on `then` (every recipient refused,
    DATA refused), which is outside the facts: the cache keeps an evaluation per what the
    simulation reads of it (simulate.then_key), in either order."""
    (tmp_path / "main.cf").write_text(B)
    accepted = tx(pipelining_from=0, data=False)  # then: 250, the client did not send DATA
    refused = tx(pipelining_from=0, data=False, then_codes=(550,))  # it could not
    assert facts_key(encode(accepted)) == facts_key(encode(refused))
    for order in ((accepted, refused), (refused, accepted)):
        made.append(Replayer(Config.load(str(tmp_path), []), Options(json=True)))
        rows = json_rows(made[-1], *order, *order)
        by_then = {(row["then"], row["now"], row["evaluated"]) for row in rows}
        assert by_then == {(250, 250, True), (550, None, False)}, rows
        assert made[-1].lines([encode(order[0]).rstrip()]).summary.cached == 1


def test_a_line_is_read_as_decode_reads_it(made: list[Replayer], tmp_path: Path) -> None:
    """The replay reads a line's head by a pattern, `then` once per text and the DNS answers
    only when asked for; what it gets is what decode() gets, and a line that decode()
    refuses is a bad line, whatever part of it is wrong (a DNS answer never asked for
    too)."""
    (tmp_path / "main.cf").write_text("mydestination = example.test\n")
    r = Replayer(Config.load(str(tmp_path), []), Options(json=True))
    made.append(r)
    t = tx(queue_id="4F2A1B3C5D", size=1234, message_size=1400, helo="mx.sender.example")
    t.dns = {("sender.example", "MX"): Answer(OK, (Record("sender.example", 60, "MX",
                                                          "mx.sender.example", 10),))}
    line = encode(t).rstrip("\n")
    cut = line.find(FACTS)
    head = read_head(line, cut)
    assert head == (t.time, "4F2A1B3C5D", 2525, 1234, 1400, line[line.index('{"rcpt"'):cut])
    raw: Answers = {}
    read = decode_facts(line[cut:], head, decode_then(head.then), raw)
    key = ("sender.example", "MX")
    assert not read.dns and decode_answer(raw[key]) == t.dns[key]
    read.dns = t.dns
    assert read == decode(line) == t
    # another key order and spaces: read as JSON
    other = json.dumps(dict(reversed(list(json.loads(line[:cut] + "}").items())))).rstrip("}")
    assert read_head(other + line[cut:], len(other)) == head
    bad_answer = line.replace('"MX","ok"', '"MX","maybe"')
    bad_head = line.replace('"size":1234', '"size":"x"')
    truncated = line[:-3]
    part = r.lines([line, bad_answer, bad_head, truncated, '{"v":2' + line[6:], line])
    assert part.bad == 4 and len(part.text.splitlines()) == 2
    for wrong in (bad_answer, bad_head, truncated):
        with pytest.raises(RecordError):
            decode(wrong)


def test_byte_ranges_read_every_line_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """Blocks of a plain file go to the processes as byte ranges (here of 1,000 bytes, a
    line crossing each end), a gzip'd file as lines: the same answers as one process."""
    path = journal(tmp_path, 300)
    text = path.read_text()
    (tmp_path / "tail").write_text(text[:text.rindex("\n", 0, len(text) - 1)])  # no last \n
    with gzip.open(tmp_path / "journal.gz", "wt") as f:
        f.write(text)
    names = (path, tmp_path / "tail", tmp_path / "journal.gz")
    one, _ = replay(tmp_path, *names, json_out=True, jobs=1)
    monkeypatch.setattr(command, "INLINE", 0)
    monkeypatch.setattr(command, "RANGE", 1000)
    many, err = replay(tmp_path, *names, json_out=True, jobs=2)
    assert one == many and len(one.splitlines()) == 3 * 600
    assert "2 lines are not journal records" in err  # (the last line of `tail` is a record)


def test_evaluations_keep_the_facts_that_come_again() -> None:
    cache: Evaluations[int] = Evaluations(2, 2)
    cache.put("again", 1)
    assert cache.get("again") == 1  # found again: kept
    for n in range(10):
        cache.put(f"once {n}", n)  # one-off facts go through probation only
    assert cache.get("again") == 1 and cache.get("once 0") is None
    assert cache.get("once 9") == 9


def test_no_cache_when_an_answer_can_change_during_the_replay(made: list[Replayer],
                                                              tmp_path: Path) -> None:
    text = "mydestination = example.test\n"
    assert not replayer(made, tmp_path, text + "default_rbl_reply = $localtime\n").cacheable
    assert not replayer(made, tmp_path, text + "smtpd_sender_restrictions = "
                        "check_sender_access redis:127.0.0.1:9/0\n").cacheable


def test_the_cache_changes_no_answer(made: list[Replayer], tmp_path: Path) -> None:
    """The same records replayed with the cache and without it (every one evaluated) give
    the same JSON lines and counts: facts again with the same `then`, with another, a
    MAIL SIZE= over message_size_limit (outside the facts), unknown users."""
    (tmp_path / "main.cf").write_text(B + "message_size_limit = 5000\n")
    records = []
    for n in range(60):
        t = tx(addr=("192.0.2.1", "192.0.2.66", "192.0.2.77")[n % 3], data=n % 2 == 0,
               rcpts=("alice@example.test", ("bob", "nobody")[n % 2] + "@example.test"),
               then_codes=((250, 250), (550, 550), (250, 550))[n % 7 % 3],
               pipelining_from=(None, 0)[n % 4 // 3], size=(100, 9000)[n % 5 // 4])
        t.time += n
        records.append(t)
    lines = [encode(t).rstrip("\n") for t in records * 3]
    parts = []
    for cached in (True, False):
        made.append(Replayer(Config.load(str(tmp_path), []), Options(json=True)))
        made[-1].cacheable = cached
        parts.append(made[-1].lines(lines))
    assert parts[0].text == parts[1].text and len(parts[0].text.splitlines()) == 360
    assert parts[0].summary.cached > 100 and parts[1].summary.cached == 0
    for a, b in ((parts[0].summary, parts[1].summary),):
        assert (a.changes, a.rules_then, a.rules_now, a.entries.counts, a.refused) == (
            b.changes, b.rules_then, b.rules_now, b.entries.counts, b.refused)
