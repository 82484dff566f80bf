"""Transactions rebuilt from a Postfix-shaped mail log, with what the log does not hold.

A refused recipient is a `reject: RCPT` line: client, HELO (as `helo=<>`, absent when the
client sent none), sender, recipient and the reply. An accepted message is put together
from smtpd's `QUEUEID: client=` line (with its SASL login), qmgr's `from=<>, size=` and the
delivery agents' `to=<>` (`orig_to=<>`) lines, and ends at qmgr's `removed`: its HELO name
is not in the log. The name lookup status of an `unknown` client and the TLS details of a
session (unless its `TLS connection established` line is there) are missing too; a check
that needs them is not evaluated (docs/replay.md). Memory is bounded: sessions and open
messages beyond their caps are dropped, oldest first (a message with what it has).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from mailgate.engine.context import NAME_OK, NAME_PERM, Client
from mailgate.engine.reply import Rule
from mailgate.journal.record import Outcome, Transaction
from mailgate.report.logline import Clock, stamp
from mailgate.report.rejects import parse_reject

SESSIONS = 10_000  # smtpd processes followed at once
MESSAGES = 50_000  # accepted messages waiting for their `removed` line
_DELIVERY = frozenset({"virtual", "local", "smtp", "lmtp", "pipe", "discard", "error",
                       "relay", "retry", "maildrop"})


@dataclass
class _Session:
    """What one smtpd process logged about its current client, and the recipients it
    refused since the last MAIL transaction began (a `NOQUEUE: reject: RCPT` line each),
    held until the client's message takes them or the transaction is over."""

    tls: tuple[str, str, int] | None = None
    tls_known: bool = False  # a `TLS connection established` line without a certificate
    pipelining: bool = False
    refused: Transaction | None = None
    helo_refused: tuple[str, Outcome] | None = None  # `reject: EHLO` (delay_reject = no)


@dataclass
class _Message:
    """An accepted message being put together from its lines."""

    time: float
    client: Client
    session: _Session
    sasl: tuple[str | None, str | None, str | None]
    before: Transaction | None  # its recipients refused before the first one accepted
    sender: str | None = None  # from qmgr's line, or a reject line's
    helo: str | None = None  # from a reject line
    size: int = 0
    queued: bool = False  # qmgr saw it: the client sent it
    accepted: dict[str, None] = field(default_factory=dict)
    refused: list[tuple[str, Outcome]] = field(default_factory=list)
    eod: Outcome | None = None


def client_of(namaddr: str) -> Client:
    """`name[addr]` (`name[addr]:port` with smtpd_client_port_logging) as a Client: a
    verified name (its reverse name the same), or `unknown` (the lookup's status then
    unknown: see `missing`)."""
    b, e = namaddr.rfind("["), namaddr.rfind("]")
    name, addr, port = namaddr[:b], namaddr[b + 1:e], namaddr[e + 2:]
    status = NAME_PERM if name == "unknown" else NAME_OK
    return Client(name, addr, int(port) if port.isdigit() else 0, name, status, status)


def _missing(client: Client, session: _Session, helo: bool) -> frozenset[str]:
    # (recipient_count: the recipients accepted in a transaction that sent no message, or
    # whose message was held or discarded, are in no line)
    out = {"recipient_count"}
    if not helo:
        out.add("helo")
    if client.name == "unknown":
        out.add("client_name_status")
    if not session.tls_known:
        out.add("tls")
    return frozenset(out)


class PostfixLog:
    """Feed lines in order (`consume`), take the transactions found (`done` at the end)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.messages: OrderedDict[str, _Message] = OrderedDict()
        self.found: list[Transaction] = []  # completed by the lines so far
        self.lines = 0

    def consume(self, lines: list[str]) -> list[Transaction]:
        """The transactions these lines complete."""
        for line in lines:
            self.lines += 1
            self._line(line)
        found, self.found = self.found, []
        return found

    def done(self) -> list[Transaction]:
        """What is still open (refused recipients, messages without a `removed` line)."""
        for session in self.sessions.values():
            self._close(session)
        self.sessions.clear()
        while self.messages:
            self._message(self.messages.popitem(last=False)[1])
        found, self.found = self.found, []
        return found

    def _line(self, line: str) -> None:
        when = stamp(line)
        rest = line[len(when) + 1:]
        tag_start = rest.find(" ") + 1
        colon = rest.find(": ", tag_start)
        if tag_start <= 0 or colon < 0:
            return
        tag, text = rest[tag_start:colon], rest[colon + 2:]
        b = tag.find("[")
        program = tag[tag.rfind("/", 0, b if b >= 0 else len(tag)) + 1:b if b >= 0 else None]
        pid = tag[b + 1:-1] if b >= 0 else ""
        if program == "smtpd":
            self._smtpd(when, pid, text)
        elif program == "qmgr":
            self._qmgr(text)
        elif program in _DELIVERY:
            self._delivery(text)

    def _close(self, session: _Session) -> None:
        """The recipients a session refused since its last MAIL make a transaction."""
        if session.refused is not None:
            self.found.append(session.refused)
            session.refused = None

    def _time(self, when: str) -> float:
        value = self.clock.parse(when)
        return value.timestamp() if value is not None else 0.0

    def _session(self, pid: str) -> _Session:
        session = self.sessions.get(pid)
        if session is None:
            session = self.sessions[pid] = _Session()
            if len(self.sessions) > SESSIONS:
                self.sessions.popitem(last=False)
        return session

    def _smtpd(self, when: str, pid: str, text: str) -> None:
        if text.startswith(("connect from ", "disconnect from ")):
            old = self.sessions.pop(pid, None)
            if old is not None:
                self._close(old)
        elif " TLS connection established from " in text:
            self._tls(self._session(pid), text)
        elif text.startswith("improper command pipelining after "):
            self._session(pid).pipelining = True
        else:
            queue_id, _, event = text.partition(": ")
            if event.startswith("reject: "):
                self._reject(when, pid, queue_id, event[8:])
            elif event.startswith("client="):
                self._client(when, pid, queue_id, event[7:])

    @staticmethod
    def _tls(session: _Session, text: str) -> None:
        """`Anonymous TLS connection established from n[a]: TLSv1.3 with cipher C (256/256
        bits)`: the session is known when no client certificate was shown."""
        head, _, tail = text.partition(": ")
        words = tail.split()
        if len(words) >= 4 and words[1] == "with" and words[2] == "cipher":
            bits = words[4].lstrip("(").split("/")[0] if len(words) > 4 else "0"
            session.tls = (words[0], words[3], int(bits) if bits.isdigit() else 0)
        session.tls_known = head.startswith("Anonymous ")

    def _reject(self, when: str, pid: str, queue_id: str, text: str) -> None:
        """A refused MAIL or RCPT (or the message refused at its end)."""
        found = parse_reject(text)
        if found is None or found.command not in ("RCPT", "MAIL", "DATA", "END-OF-MESSAGE",
                                                  "HELO", "EHLO"):
            return
        rest = text[text.find(": ", text.find("]")) + 2:]
        dsn, _, reply = rest[4:].partition(" ")
        reply = reply[:reply.rfind("; from=<")] if "; from=<" in reply else \
            reply.split("; proto=")[0]
        outcome = Outcome(int(found.code), dsn, reply, Rule(found.restriction))
        if found.command in ("HELO", "EHLO"):  # the name, for the reject lines that follow
            name = _field(text, " helo=<")  # (they show no helo= then)
            self._session(pid).helo_refused = (name, outcome) if name is not None else None
            return
        message = self.messages.get(queue_id)
        if message is not None:  # after the first recipient accepted
            if found.command == "RCPT":
                message.refused.append((found.recipient or "", outcome))
            elif found.command != "MAIL":
                message.eod = outcome
            if message.sender is None:
                message.sender = found.sender
            message.helo = message.helo or _field(text, " helo=<")
            return
        if found.command not in ("RCPT", "MAIL"):
            return
        start = text.find(" from ") + 6
        client = client_of(text[start:text.find(": ", text.find("]", start))])
        session = self._session(pid)
        sender, helo = found.sender or "", _field(text, " helo=<")
        helo_refusal = None
        if helo is None and session.helo_refused is not None:
            helo, helo_refusal = session.helo_refused
        pending = session.refused
        if found.command == "RCPT" and pending is not None and pending.sender == sender \
                and pending.client.addr == client.addr and pending.helo == helo:
            pending.recipients.append(found.recipient or "")
            pending.then.rcpt.append(outcome)
            return
        tx = Transaction(self._time(when), client, sender, helo=helo,
                         protocol=_field(text, " proto=") or "ESMTP", encryption=session.tls,
                         pipelining_from=0 if session.pipelining else None,
                         missing=_missing(client, session, helo=True))
        tx.then.helo = helo_refusal
        self._close(session)
        if found.command == "MAIL":
            tx.then.mail = outcome
            self.found.append(tx)
            return
        tx.recipients.append(found.recipient or "")
        tx.then.rcpt.append(outcome)
        session.refused = tx

    def _client(self, when: str, pid: str, queue_id: str, text: str) -> None:
        words = text.split(", ")
        sasl = {k: v for k, _, v in (w.partition("=") for w in words[1:])}
        session = self._session(pid)
        client = client_of(words[0])
        before = session.refused
        if before is not None and before.client.addr != client.addr:
            before = None
        session.refused = None
        self.messages[queue_id] = _Message(
            self._time(when), client, session,
            (sasl.get("sasl_method"), sasl.get("sasl_username"), sasl.get("sasl_sender")),
            before)
        if len(self.messages) > MESSAGES:
            self.messages.popitem(last=False)

    def _qmgr(self, text: str) -> None:
        queue_id, _, event = text.partition(": ")
        message = self.messages.get(queue_id)
        if message is None:
            return
        if event == "removed":
            del self.messages[queue_id]
            self._message(message)
        elif event.startswith("from=<"):
            message.sender, message.queued = event[6:event.find(">, ")], True
            size = _field(event, " size=")
            message.size = int(size.rstrip(",")) if size and size.rstrip(",").isdigit() else 0

    def _delivery(self, text: str) -> None:
        queue_id, _, event = text.partition(": ")
        message = self.messages.get(queue_id)
        if message is None or not event.startswith("to=<"):
            return
        original = _field(event, " orig_to=<")
        message.accepted[original or event[4:event.find(">")]] = None

    def _message(self, m: _Message) -> None:
        """The message's transaction: the recipients refused before the first accepted
        one, those accepted, those refused after (none when the log names none of them,
        a message refused at its end with several recipients)."""
        method, username, sasl_sender = m.sasl
        before = m.before
        if before is not None and m.sender is not None and before.sender != m.sender:
            self.found.append(before)  # another transaction's
            before = None
        sender = m.sender if m.sender is not None else before.sender if before else ""
        accepted = list(m.accepted)
        first = before.recipients if before is not None else []
        recipients = first + accepted + [r for r, _ in m.refused]
        if not accepted and not m.refused:
            if before is not None:
                self.found.append(before)
            return
        helo = before.helo if before is not None else m.helo
        helo_refusal = before.then.helo if before is not None else None
        if helo is None and m.session.helo_refused is not None:
            helo, helo_refusal = m.session.helo_refused
        sent = m.queued or m.eod is not None  # (else the client never sent it)
        tx = Transaction(m.time if before is None else before.time, m.client, sender,
                         recipients, helo=helo, message_size=m.size, data=sent,
                         end_of_data=sent, encryption=m.session.tls,
                         pipelining_from=0 if m.session.pipelining else None,
                         sasl_method=method, sasl_username=username, sasl_sender=sasl_sender,
                         missing=_missing(m.client, m.session, helo=helo is not None))
        tx.then.helo = helo_refusal
        if helo_refusal is not None:  # (the EHLO refused: the session stayed SMTP)
            tx.protocol = "SMTP"
        if accepted and len(recipients) > 1:  # (delivered in qmgr's order: where the
            # accepted ones came among the others is not known)
            tx.missing |= {"recipient_order"}
        tx.then.rcpt = (before.then.rcpt if before is not None else []) + \
            [Outcome(250)] * len(accepted) + [o for _, o in m.refused]
        if sent:
            tx.then.data, tx.then.eod = Outcome(354), m.eod or Outcome(250)
        self.found.append(tx)


def _field(text: str, name: str) -> str | None:
    """The value after ` name=<` (up to `>`) or ` name=` (up to a space)."""
    i = text.rfind(name)
    if i < 0:
        return None
    start = i + len(name)
    if name.endswith("<"):
        return text[start:text.find(">", start)]
    end = text.find(" ", start)
    return text[start:end if end >= 0 else len(text)]
