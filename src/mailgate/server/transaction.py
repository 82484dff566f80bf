"""The MAIL transaction: MAIL, RCPT, DATA and BDAT as Postfix smtpd answers them, and queueing.

`TransactionCommands` is mixed into `Session`; it uses the session's reply and log methods.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import CheckState, Client, Marks
from mailgate.engine.engine import Engine
from mailgate.maillog import MailLog
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.queue.store import Envelope, Incoming, QueueStore, Recipient
from mailgate.server.commands import ForbiddenCommands, parse_mail_params, parse_rcpt_params
from mailgate.server.headers import add_missing_headers, logged_message_id, received_header
from mailgate.server.stats import CommandStats
from mailgate.smtp.protocol import Command, Message, ServerConnection
from mailgate.smtp.tokens import TokType, extract_addr


@dataclass
class Transaction:
    """The state of one MAIL transaction (Postfix mail_reset/rcpt_reset clear it)."""

    sender: str | None = None
    recipients: list[Recipient] = field(default_factory=list)
    incoming: Incoming | None = None
    rcpt_overshoot: int = 0
    bdat: bytearray | None = None  # the chunks so far, once a first BDAT was accepted
    bdat_too_big: bool = False
    bdat_failed: bool = False  # a BDAT failed: later chunks are discarded up to BDAT LAST
    smtputf8: bool = False  # MAIL FROM ... SMTPUTF8 (with smtputf8_enable)
    stale_id: str | None = None  # after an END-OF-MESSAGE reject Postfix logs the old id
    stale_rcpts: int = 0  # ... and still counts its recipients against the limit
    instance: str = ""  # smtpd's state->instance (policy requests)
    size: int = 0  # MAIL SIZE=, then the size received (policy requests)

    @property
    def in_bdat(self) -> bool:
        """smtpd's bdat_state is not NONE: MAIL, RCPT and DATA are out of order."""
        return self.bdat is not None or self.bdat_failed

    @property
    def queue_id(self) -> str:
        return self.incoming.queue_id if self.incoming else (self.stale_id or "NOQUEUE")


@dataclass
class Services:
    """What a session uses besides its settings, handed in by the server."""

    engine: Engine
    store: QueueStore
    log: MailLog
    forbidden: ForbiddenCommands
    local_addresses: frozenset[str]
    on_queued: Callable[[str, Envelope, bytes], None]
    commit: Callable[[Incoming, Envelope, bytes, str], Awaitable[None]]
    clock: Callable[[], float] = time.time
    bare_newline_exempt: Callable[[Client], bool] = lambda client: False
    xclient_hosts: Callable[[Client], bool] = lambda client: False
    flush_domains: Callable[[str], bool] = lambda domain: False  # fast_flush_domains
    flush_queue: Callable[[], None] = lambda: None  # ETRN: deliver the deferred queue now
    metrics: Metrics = NO_METRICS


def unique_recipients(recipients: list[Recipient]) -> list[Recipient]:
    """Drop duplicate recipients, ignoring case (cleanup's duplicate filter); first one wins."""
    seen: set[str] = set()
    out = []
    for rcpt in recipients:
        key = rcpt.address.lower()
        if key not in seen:
            seen.add(key)
            out.append(rcpt)
    return out


def routed_recipients(recipients: list[Recipient], marks: Marks) -> list[Recipient]:
    """The queued recipients: REDIRECT replaces them all, BCC adds to them."""
    if marks.redirect:
        recipients = [Recipient(marks.redirect)]
    return unique_recipients(recipients + [Recipient(addr) for addr in marks.bcc])


class TransactionCommands:
    """MAIL/RCPT/DATA/BDAT handlers; the attributes below are the Session's."""

    s: SmtpdSettings
    svc: Services
    client: Client
    conn: ServerConnection
    tx: Transaction
    stats: CommandStats
    where: str
    helo: str
    proto: str
    error_count: int
    junk_count: int
    st: CheckState
    seqno: int

    @property
    def namaddr(self) -> str:
        raise NotImplementedError

    def reply(self, text: str) -> None:
        raise NotImplementedError

    def log(self, text: str) -> None:
        raise NotImplementedError

    def warn(self, text: str) -> None:
        raise NotImplementedError

    def log_reject(self, action: str, reply: str, recipient: str | None = None) -> None:
        raise NotImplementedError

    def reset_transaction(self) -> None:
        raise NotImplementedError

    def check_state(self) -> CheckState:
        raise NotImplementedError

    def bare_newline(self) -> bool:
        raise NotImplementedError

    # MAIL -------------------------------------------------------------------------------
    async def mail_cmd(self, cmd: Command) -> bool:
        if self.s.helo_required and not self.helo:
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return False
        self.tx.smtputf8 = False  # smtpd.c clears the MAIL flags first, even when nested
        if self.tx.sender is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return False
        if self.tx.in_bdat:
            self.reply("503 5.5.1 Error: MAIL after BDAT")
            return False
        args = cmd.tokens
        if len(args) < 3 or args[1].value.lower() != "from:":
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return False
        if args[2].type is TokType.ERROR:
            self.reply("501 5.1.7 Bad sender address syntax")
            return False
        extracted = extract_addr(args[2].value, self.s.strict_rfc821_envelopes)
        smtputf8 = self.s.smtputf8_offered and any(t.value.upper() == "SMTPUTF8"
                                                   for t in args[3:])
        if extracted.illegal or self.bad_address(extracted.address, smtputf8):
            self.warn(f"Illegal address syntax from {self.namaddr} in MAIL command: "
                      f"{args[2].value}")
            self.reply("501 5.1.7 Bad sender address syntax")
            return False
        params = parse_mail_params([t.value for t in args[3:]], self.s.smtputf8_offered)
        if params.error:
            self.reply(params.error)
            return False
        limit = self.s.message_size_limit
        if limit and params.size > limit:
            self.tx.sender = extracted.address
            reply = "552 5.3.4 Message size exceeds fixed limit"
            self.log_reject("reject", reply)
            self.tx.sender = None
            self.reply(reply)
            return False
        self.svc.engine.started_mail(extracted.address)
        if not self.s.delay_reject:
            st = self.check_state()
            st.size = params.size
            st.smtputf8 = smtputf8  # smtpd sets the flag before smtpd_check_mail()
            err = await self.svc.engine.check_mail(st, extracted.address)
            if err:
                self.st.reset_transaction()  # access-map side effects go with the reject
                self.reply(err)
                return False
        now = self.svc.clock()
        self.tx = Transaction(sender=extracted.address, size=params.size, smtputf8=smtputf8,
                              stale_rcpts=self.tx.stale_rcpts,
                              instance=f"{os.getpid():x}.{int(now):x}."
                                       f"{int(now % 1 * 1e6):x}.{self.seqno:x}")
        self.seqno += 1
        self.reply("250 2.1.0 Ok")
        return True

    # RCPT -------------------------------------------------------------------------------
    async def rcpt_cmd(self, cmd: Command) -> bool:
        if self.tx.sender is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return False
        if self.tx.in_bdat:
            self.reply("503 5.5.1 Error: RCPT after BDAT")
            return False
        args = cmd.tokens
        if len(args) < 3 or args[1].value.lower() != "to:":
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return False
        if args[2].type is TokType.ERROR:
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        extracted = extract_addr(args[2].value, self.s.strict_rfc821_envelopes)
        if extracted.illegal or not extracted.address or \
                self.bad_address(extracted.address, self.tx.smtputf8):
            self.warn(f"Illegal address syntax from {self.namaddr} in RCPT command: "
                      f"{args[2].value}")
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        params = parse_rcpt_params([t.value for t in args[3:]])
        if params.warning:
            self.warn(params.warning)
        if params.error:
            self.reply(params.error)
            return False
        # smtpd.c rcpt_cmd(): the address and its parameters are judged before the limit
        if len(self.tx.recipients) + self.tx.stale_rcpts >= self.s.recipient_limit:
            self.reply("452 4.5.3 Error: too many recipients")
            self.tx.rcpt_overshoot += 1
            return self.tx.rcpt_overshoot <= self.s.recipient_overshoot_limit
        recipient = extracted.address
        if not await self.check_recipient(recipient):
            return False
        if self.tx.incoming is None:
            self.tx.incoming = self.svc.store.create()
            self.log(f"{self.tx.queue_id}: client={self.namaddr}")
        self.tx.recipients.append(Recipient(recipient, params.orcpt, params.notify))
        if self.st.recipient is None:  # smtpd's state->recipient: the first one accepted,
            self.st.recipient = recipient  # logged as to=<> by later checks (HELO, ...)
        self.reply("250 2.1.5 Ok")
        return True

    def bad_address(self, address: str, smtputf8: bool) -> bool:
        """smtpd_check_addr(): the resolver finds the domain malformed; a non-ASCII domain
        needs SMTPUTF8 (and is then checked in its IDNA form)."""
        return self.svc.engine.bad_address(address, smtputf8)

    async def check_recipient(self, recipient: str) -> bool:
        """Run the RCPT restrictions (the engine logs a reject); reply to a reject."""
        st = self.check_state()
        st.recipient_rcptmap_checked = False
        err = await self.svc.engine.check_rcpt(st, recipient)
        if err:
            self.reply(err)
            return False
        return True

    def only_recipient(self) -> str | None:
        return self.tx.recipients[0].address if len(self.tx.recipients) == 1 else None

    # DATA / BDAT ------------------------------------------------------------------------
    def no_recipients(self) -> str:
        """DATA's and the first BDAT's reply when no RCPT was accepted."""
        return "503 5.5.1 Error: need RCPT command" if self.tx.sender is None \
            else "554 5.5.1 Error: no valid recipients"

    async def data_cmd(self, cmd: Command) -> bool | None:
        if self.tx.in_bdat:
            self.reply("503 5.5.1 Error: DATA after BDAT")
            return False
        # After a refused BDAT chunk and BDAT LAST, Postfix keeps the recipient count without
        # a transaction: DATA then passes its "need RCPT" test and runs the data restrictions.
        stale = self.tx.sender is None and self.tx.stale_rcpts > 0
        if not self.tx.recipients and not stale:
            self.reply(self.no_recipients())
            return False
        if len(cmd.tokens) != 1:
            self.reply("501 5.5.4 Syntax: DATA")
            return False
        err = await self.svc.engine.check_data(self.check_state(), self.only_recipient())
        if err:
            self.reply(err)
            return False
        if stale:  # Postfix 3.7.11's smtpd dies here (signal 11); decision 0029
            self.reply(self.no_recipients())
            return False
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        self.conn.start_data()
        return None

    async def end_of_data(self, message: Message) -> None:
        self.where = "END-OF-MESSAGE"
        if message.bare_newline and self.bare_newline():
            self.stats.count("data", False)
            self.reset_transaction()
            return
        if message.too_big:
            self.message_too_big("data")
            return
        self.tx.size = message.size
        if await self.end_of_data_rejected("data"):
            return
        await self.queue_message(message.content, "data")

    async def end_of_data_rejected(self, verb: str) -> bool:
        """smtpd_end_of_data_restrictions: a reject drops the message."""
        err = await self.svc.engine.check_eod(self.check_state(), self.only_recipient())
        if not err:
            return False
        self.reply(err)
        self.count_result(verb, False)
        # As Postfix 3.7: the message is dropped but the MAIL transaction stays open (MAIL
        # gets "nested MAIL command" until RSET) and its queue id stays in the log lines.
        tx = self.tx
        if tx.incoming is not None:
            tx.stale_id = tx.incoming.queue_id
            self.svc.store.abort(tx.incoming)
            tx.incoming = None
        tx.stale_rcpts += len(tx.recipients)
        tx.recipients = []
        tx.bdat = None
        tx.bdat_too_big = False
        tx.bdat_failed = verb == "bdat"  # RCPT, DATA: "after BDAT" (another BDAT: see 0029)
        return True

    def message_too_big(self, verb: str, warn: bool = True) -> None:
        """552 for a message over message_size_limit. smtpd warns when the text it read was
        too big; a queue file pushed over the limit by the added headers is cleanup's call
        and gets the same reply without that warning (as in Postfix)."""
        if warn:
            self.warn(f"{self.tx.queue_id}: queue file size limit exceeded")
        self.reply("552 5.3.4 Error: message file too big")
        self.count_result(verb, False)
        self.reset_transaction()

    def count_result(self, verb: str, ok: bool) -> None:
        self.stats.count(verb, ok)
        if not ok:
            self.error_count += 1

    async def queue_message(self, content: bytes, verb: str, octets: int = 0) -> None:
        """Add headers, write and fsync the queue file, then say `250 ... queued as`."""
        tx = self.tx
        assert tx.incoming is not None and tx.sender is not None
        now = self.svc.clock()
        queue_id = tx.incoming.queue_id
        rcpts = [r.address for r in tx.recipients]
        header = received_header(self.helo, self.client.name, self.client.addr,
                                 self.s.myhostname, self.s.mail_name, self.proto, queue_id,
                                 rcpts, now)
        if self.client.addr in self.svc.local_addresses:
            content, message_id = add_missing_headers(content, queue_id, tx.sender,
                                                      self.s.myhostname, now)
        else:
            message_id = logged_message_id(content)
        marks = self.st.marks
        prepend = "".join(f"{line}\n" for line in marks.prepend).encode("utf-8", "replace")
        text = prepend + header + content
        size = len(text) + text.count(b"\n")  # Postfix counts message size with CRLF
        if self.s.message_size_limit and size > self.s.message_size_limit:
            self.message_too_big(verb, warn=False)  # the limit applies to the queue file
            return
        envelope = Envelope(queue_id, tx.sender, routed_recipients(tx.recipients, marks), now,
                            self.client.name, self.client.addr, self.helo, self.proto, size,
                            message_id)
        if marks.filter:
            envelope.extra["filter"] = marks.filter
        queue = "hold" if marks.hold else "active"
        try:
            if marks.discard:  # accepted and dropped; smtpd logged the discard
                self.svc.store.abort(tx.incoming)
            else:
                await self.svc.commit(tx.incoming, envelope, text, queue)
        except Exception as exc:  # a queue failure must never look like acceptance
            self.warn(f"{queue_id}: {exc}")
            self.reply("451 4.3.0 Error: queue file write error")
            self.tx.incoming = None
            self.reset_transaction()
            self.count_result(verb, False)
            return
        tx.incoming = None
        if message_id and not marks.discard:
            self.svc.log.log("cleanup", f"{queue_id}: message-id={message_id}")
        self.error_count = 0  # forgiven before the reply, which is therefore never delayed
        self.junk_count = 0
        if verb == "bdat":  # Postfix reports the size of the client's text in CRLF form
            self.reply(f"250 2.0.0 Ok: {octets} bytes queued as {queue_id}")
        else:
            self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
        self.tx = Transaction()
        self.st.reset_transaction()
        self.stats.count(verb, True)
        self.svc.metrics.message("discarded" if marks.discard else "held" if marks.hold
                                 else "filtered" if marks.filter else "accepted")
        if queue == "active" and not marks.discard:
            self.svc.on_queued(queue_id, envelope, text)
