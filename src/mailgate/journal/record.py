"""The transaction journal's record: one JSON line per SMTP transaction (format version 1).

A line is `{"v":1,"time":T,"queue_id":Q,"port":P,"size":S,"message_size":M,"then":{...},
"facts":{...}}`: `then` holds what the checks answered (the reply and the Rule of each
refusal), `facts` everything else the restrictions look at (client, HELO, envelope, TLS,
SASL, the DNS answers the checks saw). The client's port and the sizes stay outside `facts`:
only check_policy_service reads them (and smtpd compares MAIL SIZE= with
message_size_limit). `facts` comes last and is written the same way for the same facts, so
that `mailgate replay` can use the line's text from `,"facts":` on as the key of an
evaluation (docs/replay.md, decision 0067). Default values are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mailgate.dns.rbl import SOFT, Paged, RblEntry
from mailgate.dns.resolver import (
    FAIL,
    HOST_NOT_FOUND,
    NO_DATA,
    NO_RECOVERY,
    NOTFOUND,
    OK,
    RETRY,
    TRY_AGAIN,
    Answer,
    Record,
)
from mailgate.engine.context import NAME_FORGED, NAME_OK, NAME_PERM, NAME_TEMP, Client, ClientCert
from mailgate.engine.reply import Rule, Verdict

VERSION = 1
FACTS = ',"facts":'  # where the facts start in a line (a key inside a string would be \")

_STATUS = {NAME_OK: "ok", NAME_TEMP: "temporary", NAME_PERM: "unknown", NAME_FORGED: "forged"}
_STATUS_CODE = {v: k for k, v in _STATUS.items()}
# Answer status (and nxdomain) <-> text; the error text follows from it (resolver._answer)
_ANSWER = {(OK, False): "ok", (NOTFOUND, True): "nxdomain", (NOTFOUND, False): "nodata",
           (RETRY, False): "retry", (FAIL, False): "fail"}
_ANSWER_BACK = {text: (status, nx, error) for (status, nx), text in _ANSWER.items()
                for error in ({"ok": "", "nxdomain": HOST_NOT_FOUND, "nodata": NO_DATA,
                               "retry": TRY_AGAIN, "fail": NO_RECOVERY}[text],)}


class RecordError(ValueError):
    """A journal line that is not a record of a version this program reads."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a check answered: the reply code (250 or 354 when it passed), and for a
    refusal its enhanced code, text and the Rule that made it."""

    code: int
    dsn: str = ""
    text: str = ""
    rule: Rule | None = None

    @classmethod
    def of(cls, verdict: Verdict, passed: int) -> Outcome:
        reply = verdict.reply
        if reply is None:
            return _PASSED.get(passed) or cls(passed)
        return cls(reply.code, reply.dsn, reply.text, verdict.rule)

    @property
    def refused(self) -> bool:
        return self.code >= 400

    @property
    def line(self) -> str:
        """The reply line of a refusal: `CODE DSN text`."""
        return f"{self.code} {self.dsn} {self.text}"

    def soft(self, soft_bounce: bool) -> Outcome:
        """As the client gets it: soft_bounce turns every 5xx reply into 4xx."""
        if not soft_bounce or self.code < 500:
            return self
        return Outcome(self.code - 100, "4" + self.dsn[1:], self.text, self.rule)

    def encode(self) -> list[Any]:
        if not self.refused:
            return [self.code]
        rule = self.rule or Rule("")
        return [self.code, self.dsn, self.text, rule.restriction, rule.table, rule.entry]

    @classmethod
    def decode(cls, value: list[Any]) -> Outcome:
        if len(value) == 1:
            return _PASSED.get(value[0]) or cls(int(value[0]))
        code, dsn, text, restriction, table, entry = value
        return cls(int(code), dsn, text, Rule(restriction, table, entry) if restriction
                   else None)


_PASSED = {code: Outcome(code) for code in (250, 354)}
# smtpd's own refusals that the journal records (the session replies with their line)
TOO_MANY = Outcome(452, "4.5.3", "Error: too many recipients")  # smtpd_recipient_limit
NEED_HELO = Outcome(503, "5.5.1", "Error: send HELO/EHLO first")  # smtpd_helo_required


@dataclass(slots=True)
class Then:
    """The replies the transaction got from the checks (None: that check did not run or
    was not recorded): HELO (smtpd_delay_reject = no), MAIL, each RCPT, DATA, END-OF-DATA;
    and `connect`, the client list's refusal at the greeting (smtpd_delay_reject = no),
    after which the client's MAIL and RCPT were answered `503 5.7.0 access denied`."""

    helo: Outcome | None = None
    mail: Outcome | None = None
    rcpt: list[Outcome] = field(default_factory=list)
    data: Outcome | None = None
    eod: Outcome | None = None
    connect: Outcome | None = None


@dataclass(slots=True)
class Transaction:
    """One SMTP transaction as the engine saw it, and what it answered then.

    `pipelining_from`: the number of RCPT checks made before smtpd flagged improper
    pipelining (0: from the start; None: never). `missing`: what the source did not hold
    (a Postfix log: "helo", "client_name_status", "tls", ...; empty for the journal)."""

    time: float
    client: Client
    sender: str
    recipients: list[str] = field(default_factory=list)
    helo: str | None = None
    protocol: str = "ESMTP"
    queue_id: str = ""
    smtputf8: bool = False
    size: int = 0  # MAIL SIZE=
    message_size: int | None = None  # the message's size at END-OF-DATA
    data: bool = False  # the client sent DATA (or BDAT) and it was checked
    end_of_data: bool = False
    pipelining_from: int | None = None
    encryption: tuple[str, str, int] | None = None
    ccert: ClientCert | None = None
    sasl_method: str | None = None
    sasl_username: str | None = None
    sasl_sender: str | None = None
    dns: dict[tuple[str, str], Answer] = field(default_factory=dict)
    rbl: dict[str, RblEntry] = field(default_factory=dict)
    then: Then = field(default_factory=Then)
    missing: frozenset[str] = frozenset()


def encode(tx: Transaction) -> str:
    """The journal line of a transaction (with its newline)."""
    head: dict[str, Any] = {"v": VERSION, "time": round(tx.time, 3)}
    if tx.queue_id:
        head["queue_id"] = tx.queue_id
    if tx.client.port:
        head["port"] = tx.client.port
    if tx.size:
        head["size"] = tx.size
    if tx.message_size is not None:
        head["message_size"] = tx.message_size
    head["then"] = _then(tx.then)
    head["facts"] = _facts(tx)  # last: the same facts give the same text after FACTS
    return _DUMPS(head) + "\n"


_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _then(then: Then) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("connect", "helo", "mail"):
        value: Outcome | None = getattr(then, name)
        if value is not None:
            out[name] = value.encode()
    out["rcpt"] = [o.encode() for o in then.rcpt]
    for name in ("data", "eod"):
        value = getattr(then, name)
        if value is not None:
            out[name] = value.encode()
    return out


def _facts(tx: Transaction) -> dict[str, Any]:
    c = tx.client
    client: dict[str, Any] = {"address": c.addr, "name": c.name}
    if c.reverse_name != c.name:
        client["reverse_name"] = c.reverse_name
    if c.name_status != NAME_OK:
        client["name_status"] = _STATUS[c.name_status]
    if c.reverse_status != NAME_OK:
        client["reverse_status"] = _STATUS[c.reverse_status]
    out: dict[str, Any] = {"client": client}
    if tx.helo is not None:
        out["helo"] = tx.helo
    out["protocol"] = tx.protocol
    out["sender"] = tx.sender
    out["recipients"] = tx.recipients
    optional = (("smtputf8", tx.smtputf8, False), ("data", tx.data, False),
                ("end_of_data", tx.end_of_data, False),
                ("pipelining_from", tx.pipelining_from, None))
    out.update((name, value) for name, value, default in optional if value != default)
    if tx.encryption is not None:
        out["tls"] = _tls(tx)
    if tx.sasl_method is not None or tx.sasl_sender is not None:
        out["sasl"] = [tx.sasl_method, tx.sasl_username, tx.sasl_sender]
    if tx.dns:
        out["dns"] = [_answer(name, rdtype, answer)
                      for (name, rdtype), answer in tx.dns.items()]
    if tx.rbl:
        out["rbl"] = [[query, _rbl(entry)] for query, entry in tx.rbl.items()]
    if tx.missing:
        out["missing"] = sorted(tx.missing)
    return out


def _tls(tx: Transaction) -> dict[str, Any]:
    assert tx.encryption is not None
    protocol, cipher, bits = tx.encryption
    out: dict[str, Any] = {"protocol": protocol, "cipher": cipher, "bits": bits}
    cert = tx.ccert
    if cert is not None:
        out["cert"] = [cert.subject, cert.issuer, cert.fingerprint, cert.pkey_fingerprint,
                       cert.trusted]
    return out


def _answer(name: str, rdtype: str, answer: Answer) -> list[Any]:
    status = _ANSWER.get((answer.status, answer.nxdomain), "fail")
    records = []
    for r in answer.records:
        item: list[Any] = [r.data, r.ttl]
        if r.pref or r.name != name:
            item.append(r.pref)
        if r.name != name:
            item.append(r.name)
        records.append(item)
    out: list[Any] = [name, rdtype, status, records]
    if answer.ttl != -1:
        out.append(answer.ttl)
    return out


def _rbl(entry: RblEntry) -> Any:
    if isinstance(entry, Paged):
        return [list(entry.addrs), entry.txt]
    return entry  # None or SOFT


def decode(line: str, answers: bool = True) -> Transaction:
    """A journal line as a Transaction (without `answers`, its DNS answers are left out);
    RecordError for anything else."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise RecordError(f"not a journal record: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise RecordError(f"not a version {VERSION} journal record")
    try:
        head = Head(float(obj["time"]), obj.get("queue_id", ""), int(obj.get("port", 0)),
                    int(obj.get("size", 0)), obj.get("message_size"), "")
        f = obj["facts"]
        tx = transaction(f, head, then_of(obj["then"]))
        if answers:
            for item in f.get("dns", ()):
                tx.dns[(item[0], item[1])] = decode_answer(item)
            add_rbl(f, tx)
        return tx
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed journal record: {exc!r}") from None


def transaction(f: dict[str, Any], head: Head, then: Then) -> Transaction:
    """The transaction of a record's facts `f` (decoded JSON), its head and `then`, without
    the DNS answers and list entries (below); KeyError, TypeError, ValueError for facts
    that are not a record's."""
    c = f["client"]
    name = c["name"]
    client = Client(name, c["address"], head.port, c.get("reverse_name", name),
                    _STATUS_CODE[c.get("name_status", "ok")],
                    _STATUS_CODE[c.get("reverse_status", "ok")])
    tx = Transaction(head.time, client, f["sender"], list(f["recipients"]), f.get("helo"),
                     f["protocol"], head.queue_id, bool(f.get("smtputf8", False)), head.size,
                     head.message_size, bool(f.get("data", False)),
                     bool(f.get("end_of_data", False)), f.get("pipelining_from"), then=then)
    tls = f.get("tls")
    if tls is not None:
        tx.encryption = (tls["protocol"], tls["cipher"], int(tls["bits"]))
        cert = tls.get("cert")
        if cert is not None:
            tx.ccert = ClientCert(cert[0], cert[1], cert[2], cert[3], bool(cert[4]))
    sasl = f.get("sasl")
    if sasl is not None:
        tx.sasl_method, tx.sasl_username, tx.sasl_sender = sasl
    if "missing" in f:
        tx.missing = frozenset(f["missing"])
    return tx


def add_rbl(f: dict[str, Any], tx: Transaction) -> None:
    """The DNS list entries of the facts `f`, into `tx`."""
    for query, entry in f.get("rbl", ()):
        tx.rbl[query] = Paged(tuple(entry[0]), entry[1]) if isinstance(entry, list) \
            else (SOFT if entry == SOFT else None)


def then_of(t: dict[str, Any]) -> Then:
    """`then` of a record (decoded JSON)."""
    return Then(Outcome.decode(t["helo"]) if "helo" in t else None,
                Outcome.decode(t["mail"]) if "mail" in t else None,
                [Outcome.decode(o) for o in t["rcpt"]],
                Outcome.decode(t["data"]) if "data" in t else None,
                Outcome.decode(t["eod"]) if "eod" in t else None,
                Outcome.decode(t["connect"]) if "connect" in t else None)


def again(line: str, seen: Transaction) -> Transaction:
    """A journal line whose facts are `seen`'s (the same text after FACTS): only what comes
    before them is read. RecordError for a line that is not a record."""
    try:
        obj = json.loads(line[:line.index(FACTS)] + "}")
        c = seen.client
        client = Client(c.name, c.addr, int(obj.get("port", 0)), c.reverse_name,
                        c.name_status, c.reverse_status)
        return Transaction(float(obj["time"]), client, seen.sender, seen.recipients,
                           seen.helo, seen.protocol, obj.get("queue_id", ""), seen.smtputf8,
                           int(obj.get("size", 0)), obj.get("message_size"), seen.data,
                           seen.end_of_data, seen.pipelining_from, seen.encryption,
                           seen.ccert, seen.sasl_method, seen.sasl_username, seen.sasl_sender,
                           seen.dns, seen.rbl, then_of(obj["then"]), seen.missing)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed journal record: {exc!r}") from None


def decode_answer(item: list[Any]) -> Answer:
    """A DNS answer as a record holds it (`[name, type, status, records, ttl]`)."""
    name, rdtype, status = item[0], item[1], item[2]
    code, nx, error = _ANSWER_BACK[status]
    records = tuple(Record(r[3] if len(r) > 3 else name, int(r[1]), rdtype, r[0],
                           int(r[2]) if len(r) > 2 else 0) for r in item[3])
    if len(item) > 4:
        return Answer(code, records, error=error, nxdomain=nx, ttl=int(item[4]))
    return Answer(code, records, error=error, nxdomain=nx)


def check_answer(item: list[Any]) -> None:
    """What decode_answer() reads of an answer, read the same way (and failing the same
    way), without making the answer."""
    _ANSWER_BACK[item[2]]
    for r in item[3]:
        int(r[1]), r[0]
        if len(r) > 2:
            int(r[2])
    if len(item) > 4:
        int(item[4])


def facts_key(line: str) -> str:
    """The part of a journal line that an evaluation depends on (its facts)."""
    return line[line.index(FACTS):]


class Head(NamedTuple):
    """What a line holds before its facts: the time, queue ID, client port, MAIL SIZE=, the
    message's size, and the text of `then` (parts.read_head: decoded apart, as the same
    text comes again)."""

    time: float
    queue_id: str
    port: int
    size: int
    message_size: int | None
    then: str
