"""The transaction journal: its record format (every fact back as it was written, `facts`
last and the same for the same facts), the file (records of one loop iteration in one
write, the size limit with one warning, reopening after rotation) and the recorder (what
the checks of one session answered, with the DNS answers they saw)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from mailgate.app import build_engine, build_resolver
from mailgate.config.config import Config
from mailgate.dns.rbl import SOFT, Paged
from mailgate.dns.resolver import FAIL, NOTFOUND, OK, RETRY, Answer, Record
from mailgate.engine.context import NAME_FORGED, NAME_TEMP, CheckState, Client, ClientCert
from mailgate.engine.reply import Rule
from mailgate.journal import JournalFile, RecordError, TransactionJournal, create, decode, encode
from mailgate.journal.record import FACTS, Outcome, Then, Transaction, again, facts_key
from mailgate.maps import default_registry


def full() -> Transaction:
    """A transaction using every field of the format."""
    client = Client("unknown", "192.0.2.7", 41234, "ptr.example", NAME_FORGED, NAME_TEMP)
    tx = Transaction(1764547200.125, client, "s@sender.example",
                     ["a@example.test", "b@example.test"], helo="helo.example",
                     protocol="ESMTP", queue_id="4F2A1B3C5D", smtputf8=True, size=1234,
                     message_size=1400, data=True, end_of_data=True, pipelining_from=1,
                     encryption=("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256),
                     ccert=ClientCert("cn", "issuer", "AB:CD", "EF:01", True),
                     sasl_method="PLAIN", sasl_username="u", sasl_sender="s@sender.example",
                     missing=frozenset({"helo"}))
    tx.dns = {("7.2.0.192.bl.example", "A"): Answer(OK, (Record("7.2.0.192.bl.example", 300,
                                                                "A", "127.0.0.2"),)),
              ("sender.example", "MX"): Answer(OK, (Record("sender.example", 60, "MX",
                                                           "mx.sender.example", 10),)),
              ("alias.example", "A"): Answer(OK, (Record("real.example", 5, "A", "192.0.2.9"),)),
              ("nx.example", "MX"): Answer(NOTFOUND, error="Host not found", nxdomain=True,
                                           ttl=60),
              ("nodata.example", "A"): Answer(NOTFOUND, error="Host found but no data record "
                                              "of requested type"),
              ("slow.example", "A"): Answer(RETRY, error="Host not found, try again"),
              ("bad.example", "A"): Answer(FAIL, error="Non-recoverable error")}
    tx.rbl = {"7.2.0.192.bl.example": Paged(("127.0.0.2",), "listed"),
              "8.2.0.192.bl.example": SOFT, "9.2.0.192.bl.example": None}
    tx.then = Then(Outcome(504, "5.5.2", "<x>: Helo command rejected: need fully-qualified "
                           "hostname", Rule("reject_non_fqdn_helo_hostname")), None,
                   [Outcome(250), Outcome(554, "5.7.1", "<b@example.test>: Recipient address "
                                           "rejected: no", Rule("check_recipient_access",
                                                                "texthash:/etc/access",
                                                                "b@example.test"))],
                   Outcome(354), Outcome(250))
    return tx


def test_every_fact_comes_back() -> None:
    tx = full()
    line = encode(tx)
    assert line.endswith("}\n") and line.count("\n") == 1
    assert decode(line) == tx
    assert json.loads(line)["v"] == 1


def test_defaults_are_left_out() -> None:
    tx = Transaction(1.0, Client("mx.example", "192.0.2.1", 0), "", ["a@example.test"])
    tx.then.rcpt = [Outcome(250)]
    line = encode(tx)
    assert line == ('{"v":1,"time":1.0,"then":{"rcpt":[[250]]},"facts":{"client":{"address":'
                    '"192.0.2.1","name":"mx.example"},"protocol":"ESMTP","sender":"",'
                    '"recipients":["a@example.test"]}}\n')
    assert decode(line) == tx


def test_facts_key_is_the_same_for_the_same_facts() -> None:
    one, two = full(), full()
    two.time, two.client.port, two.size, two.message_size = 5.0, 9, 99, 100
    two.queue_id, two.then = "ABCDEF1234", Then(rcpt=[Outcome(250), Outcome(250)])
    assert facts_key(encode(one)) == facts_key(encode(two))
    assert FACTS in encode(one)
    three = full()
    three.helo = "other.example"
    assert facts_key(encode(one)) != facts_key(encode(three))
    seen = decode(encode(one))
    assert again(encode(two), seen) == decode(encode(two))


@pytest.mark.parametrize("line", ["", "not json", '{"v":2,"time":1}', '[1]',
                                  '{"v":1,"time":1,"then":{},"facts":{}}'])
def test_other_lines_are_record_errors(line: str) -> None:
    with pytest.raises(RecordError):
        decode(line)


def test_lines_of_one_loop_iteration_are_one_write(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal"
    journal = JournalFile(str(path), 0, lambda text: None)
    writes: list[bytes] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)

    async def main() -> str:
        journal.batch_in(asyncio.get_running_loop())
        for n in range(3):
            journal.add(f"line {n}\n")
        before = path.read_text()
        await asyncio.sleep(0)  # the end of this loop iteration
        return before

    assert asyncio.run(main()) == ""
    assert writes == [b"line 0\nline 1\nline 2\n"]
    journal.close()


def test_a_full_journal_drops_records_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    warnings: list[str] = []
    journal = JournalFile(str(path), 25, warnings.append)
    for n in range(5):
        journal.add(f"record {n}\n")  # 9 bytes each: two fit
    assert path.read_text() == "record 0\nrecord 1\n"
    assert len(warnings) == 1 and "transaction_journal_size_limit (25 bytes)" in warnings[0]
    path.rename(tmp_path / "journal.1")  # rotated, then `mailgate postlog reopen`
    journal.reopen()
    assert "3 records were dropped" in warnings[1]
    journal.add("record 5\n")
    journal.close()
    assert path.read_text() == "record 5\n"


def test_a_journal_that_cannot_be_opened_warns_and_keeps_nothing(tmp_path: Path) -> None:
    warnings: list[str] = []
    journal = JournalFile(str(tmp_path / "missing" / "journal"), 0, warnings.append)
    journal.add("record\n")
    assert warnings and "cannot open transaction journal" in warnings[0]
    assert not journal._pending
    create(str(tmp_path / "made"))
    assert (tmp_path / "made").exists()


def _engine(tmp_path: Path, text: str, journal: TransactionJournal):  # type: ignore[no-untyped-def]
    (tmp_path / "main.cf").write_text("mydestination = example.test\n"
                                      "local_recipient_maps = inline:{alice=x}\n" + text)
    cfg = Config.load(str(tmp_path), [])
    registry = default_registry()
    engine, _ = build_engine(cfg, registry, build_resolver(cfg, registry, frozenset()),
                             lambda text: None)
    return journal.engine(engine)


def test_the_recorder_writes_what_the_checks_answered(tmp_path: Path) -> None:
    lines: list[str] = []
    journal = TransactionJournal(JournalFile(str(tmp_path / "j"), 0, print), clock=lambda: 7.0)
    journal.write = lambda tx: lines.append(encode(tx))  # type: ignore[method-assign]
    engine = _engine(tmp_path, "smtpd_delay_reject = no\n"
                               "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n"
                               "smtpd_recipient_restrictions = check_recipient_access "
                               "inline:{{bob@example.test=REJECT no bob}}\n", journal)

    async def session() -> None:
        client = await engine.connect("192.0.2.1", 25, peername_lookup=False)
        st = CheckState(client, protocol="ESMTP")
        st.where = "EHLO"
        assert (await engine.check_helo(st, "nodots")).reply is not None
        st.where = "MAIL"
        await engine.check_mail(st, "s@sender.example")
        st.sender, st.instance = "s@sender.example", "one"
        dns = engine.tables.dns
        dns.resolver.answered("x.example", "A", Answer(NOTFOUND, error="Host not found",
                                                       nxdomain=True))
        dns.rbl_cache.put("1.2.0.192.bl.example", SOFT)
        dns.rbl_cache.get("1.2.0.192.bl.example")  # a hit: recorded as such
        st.where = "RCPT"
        for rcpt in ("alice@example.test", "bob@example.test"):
            await engine.check_rcpt(st, rcpt)
        st.where = "VRFY"  # not a transaction's
        await engine.check_rcpt(st, "carol@example.test")
        st.where = "DATA"
        await engine.check_data(st, None)
        journal.finish()

    asyncio.run(session())
    assert len(lines) == 1
    tx = decode(lines[0])
    assert (tx.time, tx.sender, tx.recipients, tx.helo) == (
        7.0, "s@sender.example", ["alice@example.test", "bob@example.test"], "nodots")
    assert tx.then.helo is not None and tx.then.helo.code == 504
    assert [o.code for o in tx.then.rcpt] == [250, 554]
    rule = tx.then.rcpt[1].rule
    assert rule == Rule("check_recipient_access", "inline:{{bob@example.test=REJECT no bob}}",
                        "bob@example.test")
    assert tx.data and tx.then.data == Outcome(354)
    assert tx.dns == {("x.example", "A"): Answer(NOTFOUND, error="Host not found",
                                                 nxdomain=True)}
    assert tx.rbl == {"1.2.0.192.bl.example": SOFT}


def test_no_journal_leaves_the_engine_alone(tmp_path: Path) -> None:
    from mailgate.journal import NO_JOURNAL

    engine = _engine(tmp_path, "", NO_JOURNAL)  # type: ignore[arg-type]
    assert type(engine).__name__ == "Engine"
    assert engine.tables.dns.resolver.answered is None
