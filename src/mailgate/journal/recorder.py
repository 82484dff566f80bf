"""Records what smtpd's checks saw and answered: an Engine that notes each stage check of a
session, the DNS answers through the resolver's and the list cache's hooks, and one record
per transaction for the journal file.

A session's recorder lives in a context variable set when its client connects (the session
runs in one task), so that the shared resolver knows whose answers it gives; queries of
other tasks (delivery, prefetches) are not recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar

from mailgate.dns.rbl import RblEntry
from mailgate.dns.resolver import Answer
from mailgate.engine.context import CheckState, Client
from mailgate.engine.engine import Engine
from mailgate.engine.reply import Verdict
from mailgate.engine.resolve import Resolution
from mailgate.journal.record import TOO_MANY, Outcome, Transaction, encode
from mailgate.journal.writer import JournalFile

_SESSION: ContextVar[SessionRecorder | None] = ContextVar("mailgate_journal", default=None)


class SessionRecorder:
    """One session: the DNS answers its checks saw so far (every record of the session
    carries them), the last HELO refused, and the transaction being recorded."""

    __slots__ = ("denied", "dns", "helo", "helo_refused", "instance", "protocol", "rbl",
                 "tx", "write")

    def __init__(self, write: Callable[[Transaction], None]) -> None:
        self.write = write
        self.dns: dict[tuple[str, str], Answer] = {}
        self.rbl: dict[str, RblEntry] = {}
        self.helo: str | None = None  # a HELO name the checks refused (delay_reject = no)
        self.helo_refused: Outcome | None = None
        self.tx: Transaction | None = None
        self.instance: str | None = None  # the transaction's (None: MAIL checked, not taken)
        self.denied: Outcome | None = None  # the client list's refusal at the greeting
        self.protocol = "SMTP"  # the greeting verb seen while access is denied

    def begin(self, st: CheckState, sender: str, clock: Callable[[], float]) -> Transaction:
        """A new transaction, from the session's state as the engine sees it now."""
        self.end()
        helo, c = st.helo, st.client  # (XCLIENT changes the client in place: a copy)
        client = Client(c.name, c.addr, c.port, c.reverse_name, c.name_status, c.reverse_status)
        tx = Transaction(clock(), client, sender, protocol=st.protocol,
                         helo=helo if helo is not None else self.helo,
                         smtputf8=st.smtputf8, size=st.size,
                         pipelining_from=0 if st.ill_pipelining else None,
                         encryption=st.encryption, ccert=st.ccert,
                         sasl_method=st.sasl_method, sasl_username=st.sasl_username,
                         sasl_sender=st.sasl_sender)
        if helo is None:
            tx.then.helo = self.helo_refused
        self.tx = tx
        return tx

    def current(self, st: CheckState, clock: Callable[[], float]) -> Transaction:
        """The transaction of this RCPT, DATA or END-OF-DATA check."""
        tx = self.tx
        if tx is None or (self.instance is not None and self.instance != st.instance):
            tx = self.begin(st, st.sender or "", clock)
        self.instance = st.instance
        if st.ill_pipelining and tx.pipelining_from is None:
            tx.pipelining_from = len(tx.recipients)
        return tx

    def attempted(self, recipient: str) -> None:
        """A RCPT answered 503 after the transaction's MAIL (or the client) was refused: the
        recipient it was for (what `mailgate replay` evaluates when the candidate accepts)."""
        tx = self.tx
        if tx is not None and (tx.then.connect is not None or (
                tx.then.mail is not None and tx.then.mail.refused)):
            tx.recipients.append(recipient)

    def denied_command(self, st: CheckState, verb: str, argument: str,
                       clock: Callable[[], float]) -> None:
        """A command answered `503 5.7.0 access denied` (the client was refused at the
        greeting): its HELO name, and each MAIL (a transaction) and RCPT, are kept."""
        if self.denied is None:
            return
        if verb in ("HELO", "EHLO"):
            self.end()
            self.helo, self.protocol = argument, "ESMTP" if verb == "EHLO" else "SMTP"
        elif verb == "MAIL":
            tx = self.begin(st, argument, clock)
            tx.helo, tx.protocol = self.helo, self.protocol
            tx.then.connect, tx.then.helo = self.denied, None
        elif verb == "RCPT":
            self.attempted(argument)

    def end(self) -> None:
        """The transaction is over: its record goes to the journal (with a copy of the
        session's DNS answers so far)."""
        tx = self.tx
        if tx is None:
            return
        self.tx = self.instance = None
        if tx.recipients or tx.then.mail is not None:
            tx.dns, tx.rbl = dict(self.dns), dict(self.rbl)
            self.write(tx)


class RecordingEngine(Engine):
    """The smtpd engine that also tells the session's recorder what each check answered."""

    def __init__(self, engine: Engine, journal: TransactionJournal) -> None:
        # the same engine (settings, tables, log, its prefetch plan, whatever else it has)
        vars(self).update(vars(engine))  # (the base __init__ would plan its queries again)
        self.journal = journal

    async def connect(self, addr: str, port: int, peername_lookup: bool = True) -> Client:
        client = await super().connect(addr, port, peername_lookup)
        _SESSION.set(SessionRecorder(self.journal.write))  # this session's task
        return client

    def started_client(self, client: Client) -> None:
        """XCLIENT: the answers about the old client are not this client's."""
        recorder = _SESSION.get()
        if recorder is not None:
            recorder.end()
            recorder.dns, recorder.rbl = {}, {}
            recorder.helo = recorder.helo_refused = recorder.denied = None
        super().started_client(client)

    async def check_client(self, st: CheckState) -> Verdict:
        """The client list at the greeting (smtpd_delay_reject = no)."""
        verdict = await super().check_client(st)
        recorder = _SESSION.get()
        if recorder is not None and verdict.reply is not None:
            recorder.denied = Outcome.of(verdict, 220)
        return verdict

    async def check_helo(self, st: CheckState, helo: str | None) -> Verdict:
        verdict = await super().check_helo(st, helo)
        recorder = _SESSION.get()
        if recorder is not None and helo is not None:
            recorder.end()  # HELO ends a transaction
            refused = verdict.reply is not None
            recorder.helo = helo if refused else None
            recorder.helo_refused = Outcome.of(verdict, 250) if refused else None
        return verdict

    async def check_mail(self, st: CheckState, sender: str | None,
                         resolution: Resolution | None = None) -> Verdict:
        verdict = await super().check_mail(st, sender, resolution)
        recorder = _SESSION.get()
        if recorder is not None and sender is not None:
            tx = recorder.begin(st, sender, self.journal.clock)
            if verdict.reply is not None:  # (written at the next MAIL, HELO, RSET or the
                tx.then.mail = Outcome.of(verdict, 250)  # end, with the RCPTs tried since)
        return verdict

    async def check_rcpt(self, st: CheckState, recipient: str,
                         resolution: Resolution | None = None) -> Verdict:
        verdict = await super().check_rcpt(st, recipient, resolution)
        recorder = _SESSION.get()
        if recorder is not None and st.where == "RCPT":  # (not VRFY)
            tx = recorder.current(st, self.journal.clock)
            tx.recipients.append(recipient)
            tx.then.rcpt.append(Outcome.of(verdict, 250))
        return verdict

    async def check_data(self, st: CheckState, recipient: str | None) -> Verdict:
        verdict = await super().check_data(st, recipient)
        recorder = _SESSION.get()
        if recorder is not None:
            tx = recorder.current(st, self.journal.clock)
            tx.data = True
            tx.then.data = Outcome.of(verdict, 354)
        return verdict

    async def check_eod(self, st: CheckState, recipient: str | None) -> Verdict:
        verdict = await super().check_eod(st, recipient)
        recorder = _SESSION.get()
        if recorder is not None:
            tx = recorder.current(st, self.journal.clock)
            tx.end_of_data, tx.message_size = True, st.size
            tx.then.eod = Outcome.of(verdict, 250)
        return verdict


class Journal:
    """No transaction journal (transaction_journal is empty): nothing is recorded and the
    session's engine is the plain one."""

    enabled = False

    def engine(self, engine: Engine) -> Engine:
        """The engine a smtpd service's sessions use."""
        return engine

    def finish(self) -> None:
        """The session ends (its last transaction's record is written)."""

    def attempted(self, recipient: str) -> None:
        """RCPT TO:<recipient> answered 503 (no MAIL transaction): after a refused MAIL,
        a recipient of the refused transaction."""

    def reset(self) -> None:
        """RSET: the transaction (if any) is over."""

    def over_limit(self, st: CheckState, recipient: str) -> None:
        """RCPT TO:<recipient> answered `452 4.5.3 Error: too many recipients`."""

    def mail_refused(self, st: CheckState, sender: str, outcome: Outcome) -> None:
        """MAIL FROM:<sender> refused by smtpd itself (smtpd_helo_required)."""

    def denied(self, st: CheckState, verb: str, argument: str) -> None:
        """A command answered `503 5.7.0 access denied` (HELO/EHLO's name, MAIL's sender,
        RCPT's recipient: the address as smtpd reads it)."""

    def batch_in(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Records of one event-loop iteration are written together."""

    def reopen(self) -> None:
        """Open the journal file again (log rotation)."""

    def close(self) -> None:
        """Write what is pending and close the file."""


NO_JOURNAL = Journal()


def _answered(name: str, rdtype: str, answer: Answer) -> None:
    recorder = _SESSION.get()
    if recorder is not None:
        recorder.dns[(name, rdtype)] = answer


def _rbl_hit(query: str, entry: RblEntry) -> None:
    recorder = _SESSION.get()
    if recorder is not None:
        recorder.rbl[query] = entry


class TransactionJournal(Journal):
    """transaction_journal: each transaction's record, written to the journal file."""

    enabled = True

    def __init__(self, file: JournalFile, clock: Callable[[], float] = time.time) -> None:
        self.file = file
        self.clock = clock

    def engine(self, engine: Engine) -> Engine:
        dns = engine.tables.dns
        if dns is not None:  # what the checks of a recorded session are told
            dns.resolver.answered = _answered
            dns.rbl_cache.hit = _rbl_hit
        return RecordingEngine(engine, self)

    def write(self, tx: Transaction) -> None:
        self.file.add(encode(tx))

    def finish(self) -> None:
        recorder = _SESSION.get()
        if recorder is not None:
            recorder.end()
            _SESSION.set(None)

    def attempted(self, recipient: str) -> None:
        recorder = _SESSION.get()
        if recorder is not None:
            recorder.attempted(recipient)

    def reset(self) -> None:
        recorder = _SESSION.get()
        if recorder is not None:
            recorder.end()

    def denied(self, st: CheckState, verb: str, argument: str) -> None:
        recorder = _SESSION.get()
        if recorder is not None:
            recorder.denied_command(st, verb, argument, self.clock)

    def mail_refused(self, st: CheckState, sender: str, outcome: Outcome) -> None:
        recorder = _SESSION.get()
        if recorder is not None:
            recorder.begin(st, sender, self.clock).then.mail = outcome

    def over_limit(self, st: CheckState, recipient: str) -> None:
        recorder = _SESSION.get()
        if recorder is not None:
            tx = recorder.current(st, self.clock)
            tx.recipients.append(recipient)
            tx.then.rcpt.append(TOO_MANY)

    def batch_in(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.file.batch_in(loop)

    def reopen(self) -> None:
        self.file.reopen()

    def close(self) -> None:
        self.file.close()
