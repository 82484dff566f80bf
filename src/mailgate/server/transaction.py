"""The MAIL transaction: its state, and MAIL and RCPT as Postfix smtpd answers them.

`TransactionCommands` is mixed into `Session` (through server/data.py's `DataCommands`); it
uses the session's reply and log methods.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailgate.autoblock import NO_BLOCKS, Blocks
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import CheckState, Client, Marks
from mailgate.engine.engine import Engine
from mailgate.engine.reply import Reply
from mailgate.engine.resolve import Resolution
from mailgate.journal import NEED_HELO, NO_JOURNAL, TOO_MANY, Journal
from mailgate.maillog import MailLog
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.queue.space import INSUFFICIENT_STORAGE, check_queue
from mailgate.queue.store import Envelope, Incoming, QueueStore, Recipient
from mailgate.sasl.server import SaslServer
from mailgate.server.commands import ForbiddenCommands, parse_mail_params, parse_rcpt_params
from mailgate.server.sharedlimits import TEMPFAIL
from mailgate.server.stats import CommandStats
from mailgate.smtp.protocol import Command, ServerConnection
from mailgate.smtp.tokens import Extracted, Token, TokType, extract_addr

WRITE_ERROR = "451 4.3.0 Error: queue file write error"  # cleanup's CLEANUP_STAT_WRITE


@dataclass
class Transaction:
    """What only the server keeps of one MAIL transaction (Postfix mail_reset/rcpt_reset
    clear it). The sender, queue id, recipient count, SMTPUTF8 flag, size and instance are
    in the session's CheckState, where the engine reads them."""

    recipients: list[Recipient] = field(default_factory=list)
    queue_id: str = ""  # from the first accepted RCPT (Postfix's cleanup stream)
    incoming: Incoming | None = None  # the queue file, while it is written at the end
    rcpt_overshoot: int = 0
    bdat: bytearray | None = None  # the chunks so far, once a first BDAT was accepted
    bdat_too_big: bool = False
    bdat_failed: bool = False  # a BDAT failed: later chunks are discarded up to BDAT LAST

    @property
    def in_bdat(self) -> bool:
        """smtpd's bdat_state is not NONE: MAIL, RCPT and DATA are out of order."""
        return self.bdat is not None or self.bdat_failed


@dataclass
class Services:
    """What a session uses besides its settings, handed in by the server."""

    engine: Engine
    store: QueueStore
    log: MailLog
    forbidden: ForbiddenCommands
    local_addresses: frozenset[str]
    on_queued: Callable[[str, Envelope, bytes, bool], None]  # (..., announced)
    commit: Callable[[Incoming, Envelope, bytes, str], Awaitable[None]]
    deliver_first: Callable[[Envelope, bytes], Awaitable[bool | None]] | None = None
    clock: Callable[[], float] = time.time
    bare_newline_exempt: Callable[[Client], bool] = lambda client: False
    xclient_hosts: Callable[[Client], bool] = lambda client: False
    flush_domains: Callable[[str], bool] = lambda domain: False  # fast_flush_domains
    flush_queue: Callable[[], None] = lambda: None  # ETRN: deliver the deferred queue now
    metrics: Metrics = NO_METRICS
    tls_context: ssl.SSLContext | None = None  # STARTTLS and wrapper mode (server/tls.py)
    sasl: SaslServer | None = None  # smtpd_sasl_auth_enable = yes (server/auth.py)
    blocks: Blocks = NO_BLOCKS  # auto_block_*: bad events counted, blocked clients refused
    journal: Journal = NO_JOURNAL  # transaction_journal: one record per transaction


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
    error_count: int
    junk_count: int
    st: CheckState
    seqno: int
    sleep: float
    service: str  # the master.cf service name, for anvil's warnings
    # anvil's rate of an event for this client, counted (None: anvil does not count it)
    event_rate: Callable[[str, bool], int | None]
    counted_rate: Callable[[str], Awaitable[int | None]]  # (every node's: shared state)

    @property
    def namaddr(self) -> str:
        raise NotImplementedError

    @property
    def queue_id(self) -> str:
        raise NotImplementedError

    def reply(self, text: str | Reply) -> None:
        raise NotImplementedError

    def log(self, text: str) -> None:
        raise NotImplementedError

    def warn(self, text: str) -> None:
        raise NotImplementedError

    def log_reject(self, action: str, reply: str, recipient: str | None = None,
                   sender: str | None = None) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:
        def sasl_logged(self) -> str:  # provided by AuthCommands
            raise NotImplementedError

    def reset_transaction(self) -> None:
        raise NotImplementedError

    def bare_newline(self, message: bool = False, where: str = "") -> bool:
        raise NotImplementedError

    # MAIL -------------------------------------------------------------------------------
    async def mail_cmd(self, cmd: Command) -> bool:
        if self.s.helo_required and not self.st.helo:
            address = self.journal_address(cmd.tokens, "MAIL")
            if address is not None:
                self.svc.journal.mail_refused(self.st, address, NEED_HELO.soft(self.s.soft_bounce))
            self.reply(NEED_HELO.line)
            return False
        self.st.smtputf8 = False  # smtpd.c clears the MAIL flags first, even when nested
        if self.st.sender is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return False
        if self.tx.in_bdat:
            self.reply("503 5.5.1 Error: MAIL after BDAT")
            return False
        args = cmd.tokens
        sender = await self.envelope_address(args, "MAIL", None)
        if sender is None:
            return False
        extracted, resolution = sender
        smtputf8 = self.mail_smtputf8(args)
        engine = self.svc.engine
        params = parse_mail_params([t.value for t in args[3:]], self.s.smtputf8_offered,
                                   "DSN" not in self.s.discard_ehlo_keywords,
                                   self.st.sasl_sender)
        # smtpd's msg_size and sasl_sender outlive a refused MAIL (until mail_reset())
        self.st.sasl_sender = params.sasl_sender
        if params.size is not None:
            self.st.size = params.size
        if params.error:
            self.reply(params.error)
            return False
        limit = self.s.message_size_limit
        if limit and self.st.size > limit:
            reply = "552 5.3.4 Message size exceeds fixed limit"
            self.log_reject("reject", reply, sender=extracted.address)
            self.reply(reply)
            return False
        engine.started_mail(extracted.address)
        st = self.st
        if not self.s.delay_reject:
            st.smtputf8 = smtputf8  # smtpd sets the flag before smtpd_check_mail()
            verdict = await engine.check_mail(st, extracted.address, resolution)
            self.sleep += verdict.delay
            if verdict.reply is not None:
                st.discard_marks()  # access-map side effects go with the reject,
                st.recipient, st.smtputf8 = None, False
                st.size, st.sasl_sender = 0, None  # ... as mail_reset() does
                self.reply(verdict.reply)
                return False
        if not self.queue_has_room():
            st.smtputf8 = False
            return False
        now = self.svc.clock()
        self.tx = Transaction()
        st.sender, st.smtputf8 = extracted.address, smtputf8
        st.instance = f"{os.getpid():x}.{int(now):x}.{int(now % 1 * 1e6):x}.{self.seqno:x}"
        self.seqno += 1
        self.reply("250 2.1.0 Ok")
        return True

    async def envelope_address(self, args: tuple[Token, ...], verb: str, smtputf8: bool | None
                         ) -> tuple[Extracted, Resolution | None] | None:
        """MAIL's `FROM:<address>` or RCPT's `TO:<address>` (smtpd.c's shared checks, each
        with its own texts): the address and its resolution; None after replying to bad
        syntax. `smtputf8`: the transaction's SMTPUTF8 flag (None: MAIL's own parameter)."""
        mail = verb == "MAIL"
        if len(args) < 3 or args[1].value.lower() != ("from:" if mail else "to:"):
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>" if mail
                       else "501 5.5.4 Syntax: RCPT TO:<address>")
            return None
        if await self.over_rate_limit(mail):
            return None
        bad = "501 5.1.7 Bad sender address syntax" if mail else \
            "501 5.1.3 Bad recipient address syntax"
        if args[2].type is TokType.ERROR:
            self.reply(bad)
            return None
        extracted = extract_addr(args[2].value, self.s.strict_rfc821_envelopes)
        if smtputf8 is None:
            smtputf8 = self.mail_smtputf8(args)
        engine = self.svc.engine
        resolution = None if extracted.illegal else engine.address(extracted.address)
        if extracted.illegal or (not mail and not extracted.address) or \
                engine.bad_address(resolution, smtputf8):
            self.warn(f"Illegal address syntax from {self.namaddr} in {verb} command: "
                      f"{args[2].value}")
            self.reply(bad)
            return None
        return extracted, resolution

    async def over_rate_limit(self, mail: bool) -> bool:
        """smtpd_client_message_rate_limit (MAIL) and smtpd_client_recipient_rate_limit
        (RCPT), as smtpd.c checks them after the command's syntax and before its address:
        each such command counts in anvil's window, refused ones too; over the limit,
        `450 4.7.1` and Postfix's warning. With shared state the rate is every node's."""
        limit = self.s.message_rate_limit if mail else self.s.recipient_rate_limit
        if not limit:
            return False
        rate = await self.counted_rate("mail" if mail else "rcpt")
        if rate == TEMPFAIL:
            self.reply("451 4.3.5 Server configuration problem")
            return True
        if rate is None or rate <= limit:
            return False
        addr = self.st.client.addr
        if mail:
            self.warn(f"Message delivery request rate limit exceeded: {rate} from "
                      f"{self.namaddr} for service {self.service}")
            self.reply(f"450 4.7.1 Error: too much mail from {addr}")
        else:
            self.warn(f"Recipient address rate limit exceeded: {rate} from {self.namaddr} "
                      f"for service {self.service}")
            self.reply(f"450 4.7.1 Error: too many recipients from {addr}")
        return True

    def mail_smtputf8(self, args: tuple[Token, ...]) -> bool:
        """MAIL ... SMTPUTF8, when smtputf8_enable offers it."""
        return self.s.smtputf8_offered and any(t.value.upper() == "SMTPUTF8" for t in args[3:])

    def queue_has_room(self) -> bool:
        """queue_minfree (Postfix's smtpd_check_queue(), after the size and sender checks):
        `452 4.3.1`, logged without from=<> as Postfix does, then the warning."""
        warning = check_queue(str(self.svc.store.root), self.s.queue_minfree,
                              self.s.message_size_limit)
        if warning is None:
            return True
        self.st.discard_marks()
        self.st.recipient = None
        self.log_reject("reject", INSUFFICIENT_STORAGE)
        self.warn(warning)
        self.reply(INSUFFICIENT_STORAGE)
        return False

    # RCPT -------------------------------------------------------------------------------
    async def rcpt_cmd(self, cmd: Command) -> bool:
        if self.st.sender is None:
            recipient = self.journal_address(cmd.tokens, "RCPT")
            if recipient:
                self.svc.journal.attempted(recipient)
            self.reply("503 5.5.1 Error: need MAIL command")
            return False
        if self.tx.in_bdat:
            self.reply("503 5.5.1 Error: RCPT after BDAT")
            return False
        args = cmd.tokens
        found = await self.envelope_address(args, "RCPT", self.st.smtputf8)
        if found is None:
            return False
        extracted, resolution = found
        params = parse_rcpt_params([t.value for t in args[3:]],
                                   "DSN" not in self.s.discard_ehlo_keywords)
        if params.warning:
            self.warn(params.warning)
        if params.error:
            self.reply(params.error)
            return False
        # smtpd.c rcpt_cmd(): the address and its parameters are judged before the limit
        if self.st.rcpt_count >= self.s.recipient_limit:
            self.svc.journal.over_limit(self.st, extracted.address)
            self.reply(TOO_MANY.line)
            self.tx.rcpt_overshoot += 1
            return self.tx.rcpt_overshoot <= self.s.recipient_overshoot_limit
        recipient = extracted.address
        if not await self.check_recipient(recipient, resolution):
            return False
        st = self.st
        if not self.tx.queue_id:  # Postfix opens its queue file here; ours is written at
            # the end of the message, when needed (decision 0047), under this id
            self.tx.queue_id = st.queue_id = self.svc.store.new_id()
            self.log(f"{self.queue_id}: client={self.namaddr}{self.sasl_logged()}")
        self.tx.recipients.append(Recipient(recipient, params.orcpt, params.notify))
        st.rcpt_count += 1
        if st.recipient is None:  # smtpd's state->recipient: the first one accepted,
            st.recipient = recipient  # logged as to=<> by later checks (HELO, ...)
        self.reply("250 2.1.5 Ok")
        return True

    def journal_address(self, args: tuple[Token, ...], verb: str) -> str | None:
        """For the journal, the address of a MAIL or RCPT that is answered without its
        checks (503): as smtpd reads it; None when off or of bad syntax."""
        if not self.svc.journal.enabled or len(args) < 3 or args[2].type is TokType.ERROR \
                or args[1].value.lower() != ("from:" if verb == "MAIL" else "to:"):
            return None
        extracted = extract_addr(args[2].value, self.s.strict_rfc821_envelopes)
        return None if extracted.illegal else extracted.address

    def journal_denied(self, cmd: Command) -> None:
        """A command answered `503 5.7.0 access denied`, for the journal."""
        verb, args = cmd.verb, cmd.tokens
        if verb in ("HELO", "EHLO") and len(args) >= 2:
            self.svc.journal.denied(self.st, verb, args[1].value)
        elif verb in ("MAIL", "RCPT"):
            address = self.journal_address(args, verb)
            if address is not None and (address or verb == "MAIL"):
                self.svc.journal.denied(self.st, verb, address)

    async def check_recipient(self, recipient: str, resolution: Resolution | None) -> bool:
        """Run the RCPT restrictions (the engine logs a reject); reply to a reject."""
        verdict = await self.svc.engine.check_rcpt(self.st, recipient, resolution)
        self.sleep += verdict.delay
        if verdict.reply is not None:
            self.reply(verdict.reply)
            return False
        return True

    def only_recipient(self) -> str | None:
        return self.tx.recipients[0].address if len(self.tx.recipients) == 1 else None
