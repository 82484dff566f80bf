"""One SMTP session: Postfix smtpd's command loop, error accounting and log lines, without I/O.

The server feeds it events from the sans-IO core; it answers with replies (each with the delay
the tarpit asks for) and decides when the connection ends. Command handlers follow
postfix/src/smtpd/smtpd.c (reply codes and texts verified against a live Postfix 3.7.11).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.actions import Verdict
from mailgate.engine.context import Client, Request
from mailgate.engine.evaluate import Engine
from mailgate.maillog import MailLog
from mailgate.queue.store import Envelope, Incoming, QueueStore, Recipient
from mailgate.server.commands import (
    CommandTable,
    ForbiddenCommands,
    is_header_name,
    parse_mail_params,
    parse_rcpt_params,
)
from mailgate.server.headers import add_missing_headers, logged_message_id, received_header
from mailgate.server.stats import CommandStats
from mailgate.smtp.protocol import Chunk, Closed, Command, Message, ServerConnection
from mailgate.smtp.tokens import TokType, extract_addr

# Commands that count towards smtpd_junk_command_limit (smtpd.c SMTPD_CMD_FLAG_LIMIT).
_JUNK = frozenset({"HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"})
# After EHLO these may be followed by more input in one pipelined group (RFC 2920).
_PIPELINE_OK = frozenset({"QUIT", "RSET", "MAIL", "RCPT", "ETRN", "AUTH", "BDAT", "XCLIENT",
                          "XFORWARD", "STARTTLS"})


@dataclass
class Transaction:
    """The state of one MAIL transaction (Postfix mail_reset/rcpt_reset clear it)."""

    sender: str | None = None
    recipients: list[Recipient] = field(default_factory=list)
    incoming: Incoming | None = None
    rcpt_overshoot: int = 0
    bdat: bytearray | None = None
    bdat_too_big: bool = False

    @property
    def queue_id(self) -> str:
        return self.incoming.queue_id if self.incoming else "NOQUEUE"


@dataclass
class Services:
    """What a session uses besides its settings, handed in by the server."""

    engine: Engine
    store: QueueStore
    log: MailLog
    forbidden: ForbiddenCommands
    local_addresses: frozenset[str]
    on_queued: Callable[[str, Envelope, bytes], None]
    commit: Callable[[Incoming, Envelope, bytes], Awaitable[None]]
    clock: Callable[[], float] = time.time
    bare_newline_exempt: Callable[[Client], bool] = lambda client: False


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


class Session:
    """Postfix smtpd semantics for one connection; `handle()` an event, read `out`."""

    def __init__(self, settings: SmtpdSettings, services: Services, client: Client,
                 conn: ServerConnection) -> None:
        self.s = settings
        self.svc = services
        self.client = client
        self.conn = conn
        self.out: list[tuple[float, bytes]] = []
        self.closing = False
        self.error_count = 0
        self.junk_count = 0
        self.where = "CONNECT"
        self.helo = ""
        self.proto = "SMTP"
        self.tx = Transaction()
        self.stats = CommandStats()
        self.pipelining_flagged = False
        self.bdat_error = ""
        self.bdat_size = 0
        self.table = CommandTable(self)

    # --- replies and logging ----------------------------------------------------------
    def delay(self) -> float:
        """The tarpit: every reply waits once the error count reached the soft limit."""
        if self.error_count < self.s.soft_error_limit:
            return 0.0
        base = self.s.error_sleep_time
        if self.s.error_sleep_growth:
            extra = self.s.error_sleep_growth * (self.error_count - self.s.soft_error_limit)
            return min(base + extra, max(self.s.error_sleep_max, base))
        return base

    def reply(self, text: str) -> None:
        """Queue one reply line (or CRLF-joined lines); 421/521 end the session after it."""
        self.out.append((self.delay(), (text + "\r\n").encode("utf-8", "surrogateescape")))
        if text.startswith(("421", "521")):
            self.closing = True

    def log(self, text: str) -> None:
        self.svc.log.log("smtpd", text)

    def warn(self, text: str) -> None:
        self.svc.log.log("smtpd", "warning: " + text)

    @property
    def namaddr(self) -> str:
        if self.s.client_port_logging:
            return f"{self.client.name}[{self.client.addr}]:{self.client.port}"
        return f"{self.client.name}[{self.client.addr}]"

    def log_reject(self, action: str, reply: str, recipient: str | None = None) -> None:
        """`QUEUEID: reject: CMD from name[addr]: REPLY; from=<s> to=<r> proto=P helo=<h>`."""
        text = f"{self.tx.queue_id}: {action}: {self.where} from {self.namaddr}: {reply};"
        if self.tx.sender is not None:
            text += f" from=<{self.tx.sender}>"
        if recipient is not None:
            text += f" to=<{recipient}>"
        text += f" proto={self.proto}"
        if self.helo:
            text += f" helo=<{self.helo}>"
        self.log(text)

    # --- session events ---------------------------------------------------------------
    def start(self, early_input: bytes) -> None:
        self.log(f"connect from {self.namaddr}")
        if early_input:
            self.flag_pipelining("CONNECT", early_input)
        self.reply(f"220 {self.s.banner}")

    def flag_pipelining(self, where: str, pending: bytes) -> None:
        if self.pipelining_flagged:
            return
        self.pipelining_flagged = True
        shown = pending[:100].decode("latin-1").encode("unicode_escape").decode("ascii")
        shown = shown.replace("\\x", "\\x")
        self.log(f"improper command pipelining after {where} from {self.namaddr}: {shown}")

    def over_hard_limit(self) -> bool:
        """Checked before each command: at the hard limit, say 421 and end the session."""
        if self.error_count < self.s.hard_error_limit:
            return False
        self.reply(f"421 4.7.0 {self.s.myhostname} Error: too many errors")
        self.log(f"too many errors after {self.where} from {self.namaddr}")
        self.closing = True
        return True

    def lost(self, event: Closed) -> None:
        if event.data_bytes is not None:
            self.stats.count(self.where.lower(), False)
            self.log(f"lost connection after {self.where} ({event.data_bytes} bytes) "
                     f"from {self.namaddr}")
        elif self.where not in ("END-OF-MESSAGE",):
            self.log(f"lost connection after {self.where} from {self.namaddr}")

    def timed_out(self) -> None:
        self.reply(f"421 4.4.2 {self.s.myhostname} Error: timeout exceeded")
        self.log(f"timeout after {self.where} from {self.namaddr}")
        self.closing = True

    def finish(self) -> None:
        self.reset_transaction()
        self.log(f"disconnect from {self.namaddr} {self.stats.summary()}")

    def reset_transaction(self) -> None:
        if self.tx.incoming is not None:
            self.svc.store.abort(self.tx.incoming)
        self.tx = Transaction()

    # --- commands ---------------------------------------------------------------------
    async def handle(self, event: Command | Message | Chunk) -> None:
        if isinstance(event, Message):
            await self.end_of_data(event)
        elif isinstance(event, Chunk):
            await self.bdat_chunk(event)
        else:
            await self.command(event)

    def bare_newline(self) -> bool:
        """`smtpd_forbid_bare_newline = yes`: reply and disconnect (Postfix 3.7.10+)."""
        if self.s.forbid_bare_newline != "yes" or self.svc.bare_newline_exempt(self.client):
            return False
        self.reply(f"{self.s.bare_newline_reject_code} 5.5.2 {self.s.myhostname} Error: "
                   "bare <LF> received")
        self.closing = True
        return True

    async def command(self, cmd: Command) -> None:
        if cmd.bare_newline and self.bare_newline():
            return
        if cmd.too_long:
            self.warn(f"{self.namaddr}: request longer than {self.s.line_length_limit}: "
                      f"{cmd.line[:30]}...")
        if cmd.bad_utf8 and self.s.smtputf8_enable:
            self.reply("500 5.5.2 Error: bad UTF-8 syntax")
            self.error_count += 1
            return
        if not cmd.tokens:
            self.reply("500 5.5.2 Error: bad syntax")
            self.error_count += 1
            return
        verb = cmd.verb
        if verb in self.s.noop_commands:
            self.reply("250 2.0.0 Ok")
            self.count_junk()
            return
        handler = self.table.get(verb)
        if handler is None:
            self.where = "UNKNOWN"
            self.stats.count("unknown", False)
            if is_header_name(cmd.tokens[0].value) or self.svc.forbidden.match(cmd.tokens[0].value):
                self.warn(f"non-SMTP command from {self.namaddr}: {cmd.line[:100]}")
                self.reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
                self.closing = True
                return
            self.reply("500 5.5.2 Error: command not recognized")
            self.error_count += 1
            return
        self.where = verb
        self.check_pipelining(verb)
        if self.closing:
            return
        ok = await handler(cmd)
        if ok is not None:  # DATA and BDAT are counted when their text has arrived
            self.stats.count(verb.lower(), ok)
            if not ok:
                self.error_count += 1
        if verb in _JUNK:
            self.count_junk()
        if verb == "QUIT":
            self.closing = True

    def count_junk(self) -> None:
        if self.junk_count > self.s.junk_command_limit:
            self.error_count += 1
        self.junk_count += 1

    def check_pipelining(self, verb: str) -> None:
        pending = self.conn.buffered()
        if not pending or self.pipelining_flagged:
            return
        if self.proto != "ESMTP" or verb not in _PIPELINE_OK:
            self.flag_pipelining(verb, pending)
            if self.s.forbid_unauth_pipelining:
                self.reply("554 5.5.0 Error: SMTP protocol synchronization")
                self.stats.count(verb.lower(), False)
                self.closing = True

    # HELO / EHLO ------------------------------------------------------------------------
    async def helo_cmd(self, cmd: Command) -> bool:
        return self._helo(cmd, "HELO")

    async def ehlo_cmd(self, cmd: Command) -> bool:
        return self._helo(cmd, "EHLO")

    def _helo(self, cmd: Command, verb: str) -> bool:
        if len(cmd.tokens) < 2:
            self.reply(f"501 Syntax: {verb} hostname")
            return False
        self.reset_transaction()
        self.helo = " ".join(t.value for t in cmd.tokens[1:])
        self.client.helo = self.helo
        if verb == "HELO":
            self.proto = "SMTP"
            self.reply(f"250 {self.s.myhostname}")
            return True
        self.proto = "ESMTP"
        lines = [self.s.myhostname, *self.ehlo_keywords()]
        text = "\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}"
        self.reply(text)
        return True

    def ehlo_keywords(self) -> list[str]:
        words = ["PIPELINING"]
        words.append(f"SIZE {self.s.message_size_limit}" if self.s.message_size_limit else "SIZE")
        if not self.s.disable_vrfy:
            words.append("VRFY")
        words += ["ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.s.smtputf8_enable:
            words.append("SMTPUTF8")
        words.append("CHUNKING")
        return [w for w in words if w.split()[0] not in self.s.discard_ehlo_keywords]

    # MAIL -------------------------------------------------------------------------------
    async def mail_cmd(self, cmd: Command) -> bool:
        if self.s.helo_required and not self.helo:
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return False
        if self.tx.sender is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return False
        args = cmd.tokens
        if len(args) < 3 or args[1].value.lower() != "from:":
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return False
        if args[2].type is TokType.ERROR:
            self.reply("501 5.1.7 Bad sender address syntax")
            return False
        extracted = extract_addr(args[2].value, self.s.strict_rfc821_envelopes)
        if extracted.illegal:
            self.warn(f"Illegal address syntax from {self.namaddr} in MAIL command: "
                      f"{args[2].value}")
            self.reply("501 5.1.7 Bad sender address syntax")
            return False
        params = parse_mail_params([t.value for t in args[3:]])
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
        self.tx = Transaction(sender=extracted.address)
        self.reply("250 2.1.0 Ok")
        return True

    # RCPT -------------------------------------------------------------------------------
    async def rcpt_cmd(self, cmd: Command) -> bool:
        if self.tx.sender is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return False
        args = cmd.tokens
        if len(args) < 3 or args[1].value.lower() != "to:":
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return False
        if len(self.tx.recipients) >= self.s.recipient_limit:
            self.reply("452 4.5.3 Error: too many recipients")
            self.tx.rcpt_overshoot += 1
            return self.tx.rcpt_overshoot <= self.s.recipient_overshoot_limit
        if args[2].type is TokType.ERROR:
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        extracted = extract_addr(args[2].value, self.s.strict_rfc821_envelopes)
        if extracted.illegal or not extracted.address:
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
        recipient = extracted.address
        if not self.check_recipient(recipient):
            return False
        if self.tx.incoming is None:
            self.tx.incoming = self.svc.store.create()
            self.log(f"{self.tx.queue_id}: client={self.namaddr}")
        self.tx.recipients.append(Recipient(recipient, params.orcpt, params.notify))
        self.reply("250 2.1.5 Ok")
        return True

    def check_recipient(self, recipient: str) -> bool:
        """Run the RCPT restrictions; on a reject, log and reply and return False."""
        req = Request(self.client, self.tx.sender, recipient, self.where)
        action = self.svc.engine.check_rcpt(req)
        if action.verdict is not Verdict.REJECT:
            return True
        self.log_reject("reject", action.reply, recipient)
        self.reply(action.reply)
        return False

    # DATA / BDAT ------------------------------------------------------------------------
    async def data_cmd(self, cmd: Command) -> bool | None:
        if not self.tx.recipients:
            self.reply("503 5.5.1 Error: need RCPT command")
            return False
        if len(cmd.tokens) != 1:
            self.reply("501 5.5.4 Syntax: DATA")
            return False
        if self.tx.bdat is not None:
            self.reply("503 5.5.1 Error: DATA command is not allowed after BDAT")
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
        await self.queue_message(message.content, "data")

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

    async def bdat_cmd(self, cmd: Command) -> bool | None:
        args = cmd.tokens
        size_ok = len(args) >= 2 and args[1].value.isdigit() and len(args[1].value) < 19
        last = len(args) == 3 and args[2].value.upper() == "LAST"
        if not size_ok or len(args) > 3 or (len(args) == 3 and not last):
            self.warn(f"{self.tx.queue_id}: malformed BDAT command syntax from "
                      f"{self.namaddr}: {cmd.line[:100]}")
            self.reply("521 5.5.4 Syntax: BDAT count [LAST]")
            return False
        size = int(args[1].value)
        if not self.tx.recipients:
            self.conn.start_chunk(size, last, discard=True)
            self.bdat_error = "503 5.5.1 Error: need RCPT command"
            return None
        self.bdat_error = ""
        if self.tx.bdat is None:
            self.tx.bdat = bytearray()
        limit = self.s.message_size_limit
        too_big = self.tx.bdat_too_big or (limit and len(self.tx.bdat) + size > limit)
        self.tx.bdat_too_big = bool(too_big)
        self.conn.start_chunk(size, last, discard=bool(too_big))
        self.bdat_size = size
        return None

    async def bdat_chunk(self, chunk: Chunk) -> None:
        if self.bdat_error:
            self.reply(self.bdat_error)
            self.bdat_error = ""
            self.count_result("bdat", False)
            return
        assert self.tx.bdat is not None
        self.tx.bdat += chunk.data
        if not chunk.last:
            self.reply(f"250 2.0.0 Ok: {self.bdat_size} bytes")
            self.count_result("bdat", True)
            return
        self.where = "END-OF-MESSAGE"
        if self.tx.bdat_too_big:
            self.message_too_big("bdat")
            return
        content = bytes(self.tx.bdat).replace(b"\r\n", b"\n")
        await self.queue_message(content, "bdat")

    async def queue_message(self, content: bytes, verb: str) -> None:
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
        text = header + content
        size = len(text) + text.count(b"\n")  # Postfix counts message size with CRLF
        if self.s.message_size_limit and size > self.s.message_size_limit:
            self.message_too_big(verb, warn=False)  # the limit applies to the queue file
            return
        envelope = Envelope(queue_id, tx.sender, unique_recipients(tx.recipients), now,
                            self.client.name, self.client.addr, self.helo, self.proto, size,
                            message_id)
        try:
            await self.svc.commit(tx.incoming, envelope, text)
        except Exception as exc:  # a queue failure must never look like acceptance
            self.warn(f"{queue_id}: {exc}")
            self.reply("451 4.3.0 Error: queue file write error")
            self.tx.incoming = None
            self.reset_transaction()
            self.count_result(verb, False)
            return
        tx.incoming = None
        if message_id:
            self.svc.log.log("cleanup", f"{queue_id}: message-id={message_id}")
        self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
        self.error_count = 0
        self.junk_count = 0
        self.tx = Transaction()
        self.stats.count(verb, True)
        self.svc.on_queued(queue_id, envelope, text)

    # The rest -----------------------------------------------------------------------------
    async def rset_cmd(self, cmd: Command) -> bool:
        if len(cmd.tokens) != 1:
            self.reply("501 5.5.4 Syntax: RSET")
            return False
        self.reset_transaction()
        self.reply("250 2.0.0 Ok")
        return True

    async def noop_cmd(self, cmd: Command) -> bool:
        self.reply("250 2.0.0 Ok")
        return True

    async def quit_cmd(self, cmd: Command) -> bool:
        self.reply("221 2.0.0 Bye")
        return True

    async def vrfy_cmd(self, cmd: Command) -> bool:
        if self.s.disable_vrfy:
            self.reply("502 5.5.1 VRFY command is disabled")
            return False
        words = [t.value for t in cmd.tokens[1:]]
        if len(words) > 1 and words[-1].upper() == "SMTPUTF8":
            words.pop()
        if not words:
            self.reply("501 5.5.4 Syntax: VRFY address [SMTPUTF8]")
            return False
        arg = " ".join(words)
        extracted = extract_addr(arg, False)
        if extracted.illegal or not extracted.address:
            self.warn(f"Illegal address syntax from {self.namaddr} in VRFY command: {arg}")
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        if not self.check_recipient(extracted.address):
            return False
        self.reply(f"252 2.0.0 {arg}")
        return True

    async def etrn_cmd(self, cmd: Command) -> bool:
        if self.s.helo_required and not self.helo:
            self.reply("503 Error: send HELO/EHLO first")
            return False
        if self.tx.sender is not None:
            self.reply("503 Error: MAIL transaction in progress")
            return False
        if len(cmd.tokens) != 2:
            self.reply("500 Syntax: ETRN domain")
            return False
        domain = cmd.tokens[1].value
        self.warn(f"reject: ETRN {domain[:100]}... from {self.namaddr}")
        self.reply(f"459 <{domain}>: service unavailable")
        return False

    async def help_cmd(self, cmd: Command) -> bool:
        self.reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY ETRN QUIT")
        return True

    async def starttls_cmd(self, cmd: Command) -> bool:
        self.reply("502 5.5.1 Error: command not implemented")
        return False

    async def auth_cmd(self, cmd: Command) -> bool:
        self.reply("503 5.5.1 Error: authentication not enabled")
        return False

    async def xclient_cmd(self, cmd: Command) -> bool:
        if self.tx.sender is not None:
            self.reply("503 5.5.1 Error: MAIL transaction in progress")
            return False
        self.reply("550 5.7.0 Error: insufficient authorization")
        return False
