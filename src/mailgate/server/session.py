"""One SMTP session: Postfix smtpd's command loop, error accounting and log lines, without I/O.

The server feeds it events from the sans-IO core; it answers with replies (each with the delay
the tarpit asks for) and decides when the connection ends. Command handlers follow
postfix/src/smtpd/smtpd.c (reply codes and texts verified against a live Postfix 3.7.11).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import CheckState, Client
from mailgate.engine.reply import Reply
from mailgate.engine.tarpit import tarpit_delay
from mailgate.maps.casefold import printable
from mailgate.policy.client import release
from mailgate.sasl.dovecot import Exchange
from mailgate.server import xclient
from mailgate.server.auth import AuthCommands
from mailgate.server.bdat import BdatCommands
from mailgate.server.commands import CommandTable, is_header_name
from mailgate.server.data import DataCommands
from mailgate.server.session_commands import SessionCommands
from mailgate.server.starttls import TlsCommands
from mailgate.server.stats import CommandStats
from mailgate.server.tls import TlsInfo
from mailgate.server.transaction import Services, Transaction
from mailgate.smtp.protocol import Chunk, Closed, Command, Message, ServerConnection
from mailgate.smtp.tokens import log_form, smtpd_token

__all__ = ["Services", "Session"]

# Commands that count towards smtpd_junk_command_limit (smtpd.c SMTPD_CMD_FLAG_LIMIT).
_JUNK = frozenset({"HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"})
# After EHLO these may be followed by more input in one pipelined group (RFC 2920).
_PIPELINE_OK = frozenset({"QUIT", "RSET", "MAIL", "RCPT", "ETRN", "AUTH", "BDAT", "XCLIENT",
                          "XFORWARD", "STARTTLS"})


_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
            92: "\\\\"}


def escape(data: bytes) -> str:
    """Postfix escape(): printable ASCII as is, C escapes, other bytes as `\\ooo` octal."""
    return "".join(_ESCAPES.get(b) or (chr(b) if 32 <= b < 127 else f"\\{b:03o}")
                   for b in data)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes are kept as surrogates
        return False
    return True



async def _uncounted(event: str) -> int | None:
    """counted_rate() of a client anvil does not count."""
    return None

class Session(SessionCommands, AuthCommands, TlsCommands, BdatCommands, DataCommands,
              xclient.XclientCommands):
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
        # The session's state lives in the object the engine reads (where, HELO, protocol,
        # sender, queue id, recipient count, ...): nothing is copied before a check.
        self.st = CheckState(client, namaddr=self.client_namaddr())
        self.sleep = 0.0  # what the engine's `sleep` restriction added to the next reply
        self.tx = Transaction()
        self.stats = CommandStats()
        self.chunk_refusal: Reply | str = ""
        self.bdat_size = 0
        self.table = CommandTable(self)
        self.seqno = 0  # numbers the transactions' policy `instance`
        self.access_denied = ""
        self.xclient_allowed = services.xclient_hosts(client)
        self.tls: TlsInfo | None = None  # the TLS session, once established
        self.starttls_pending = False  # the listener does the handshake after the 220
        self.auth_exchange: Exchange | None = None  # an AUTH waiting for the client
        self.auth_mechanisms: tuple[str, ...] | None = None
        self.sasl_reply = ""
        # anvil's rates of MAIL, RCPT, AUTH and new TLS sessions (set by the listener): the
        # rate (with `count`, after counting this event), or None for a client not counted
        self.event_rate: Callable[[str, bool], int | None] = lambda event, count: None
        # MAIL, RCPT and AUTH counted: the rate, every node's with shared state (TEMPFAIL:
        # the store failed with redis_failure_action = tempfail), or None (not counted)
        self.counted_rate: Callable[[str], Awaitable[int | None]] = _uncounted
        self.service = "smtp"  # the master.cf service name, for anvil's warnings

    # --- replies and logging ----------------------------------------------------------
    def delay(self) -> float:
        return tarpit_delay(self.s, self.error_count)

    def reply(self, text: str | Reply, more: tuple[str, ...] = ()) -> None:
        """Queue a reply (`more`: further lines of a multi-line reply) with the tarpit delay
        and the engine's `sleep`; 421/521 end the session after it. The engine's Reply is
        final; the session's own `NNN text` gets smtpd_chat_reply's soft_bounce here."""
        if isinstance(text, Reply):
            code, line = text.code, f"{text.dsn} {text.text}"
        else:
            if self.s.soft_bounce and text[0] == "5":  # smtpd_chat_reply's safety net
                text = "4" + text[1:4] + ("4" if text[4:5] == "5" else text[4:5]) + text[5:]
            code, line = int(text[:3]), text[4:]
        self.svc.metrics.reply(code)
        self.svc.blocks.replied(self.st, code, line)  # a bad event counts (auto_block_*)
        delay = self.delay()
        data = self.conn.send(code, (line, *more) if more else line)
        self.out.append((delay + self.sleep, data))
        self.sleep = 0.0
        if more and delay:  # smtpd.c sends EHLO one line at a time: the tarpit waits for each
            lines = data.split(b"\r\n")
            self.out[-1] = (self.out[-1][0], lines[0] + b"\r\n")
            self.out += [(delay, line + b"\r\n") for line in lines[1:-1]]
        if code in (421, 521):
            self.closing = True

    def log(self, text: str) -> None:
        self.svc.log.log("smtpd", text)

    def warn(self, text: str) -> None:
        self.svc.log.log("smtpd", "warning: " + text)

    def client_namaddr(self) -> str:
        """`name[addr]`, with `:port` under smtpd_client_port_logging."""
        if self.s.client_port_logging:
            return f"{self.client.name}[{self.client.addr}]:{self.client.port}"
        return f"{self.client.name}[{self.client.addr}]"

    @property
    def namaddr(self) -> str:
        return self.st.namaddr

    @property
    def queue_id(self) -> str:
        return self.st.queue_id or "NOQUEUE"

    def log_reject(self, action: str, reply: str, recipient: str | None = None,
                   sender: str | None = None) -> None:
        """`QUEUEID: reject: CMD from name[addr]: REPLY; from=<s> to=<r> proto=P helo=<h>`
        (`sender`: the one being refused, when there is none yet)."""
        st = self.st
        text = f"{self.queue_id}: {action}: {st.where} from {st.namaddr}: {reply};"
        sender = st.sender if sender is None else sender
        if sender is not None:
            text += f" from=<{log_form(sender)}>"
        if recipient is not None:
            text += f" to=<{log_form(recipient)}>"
        text += f" proto={st.protocol}"
        if st.helo:
            text += f" helo=<{st.helo}>"
        self.log(text)

    # --- session events ---------------------------------------------------------------
    async def start(self, early_input: bytes, greeted: bool = False,
                    handshake: Callable[[], Awaitable[bool]] | None = None) -> None:
        """The session begins; `greeted`: the listener already sent the 220 greeting (it
        may, with smtpd_delay_reject = yes, while the client's name is looked up);
        `handshake`: smtpd_tls_wrappermode, TLS before the greeting (a failure ends the
        session)."""
        self.log(f"connect from {self.namaddr}")
        if handshake is not None and not await handshake():
            return
        if early_input:
            self.flag_pipelining("CONNECT", early_input)
        if not greeted:
            await self.greet()
        else:  # the greeting is out: a blocked client's refusal follows it
            await self.refuse_blocked()

    async def greet(self) -> None:
        """The 220 greeting, or (smtpd_delay_reject = no) the client list's reject instead:
        then every later command but QUIT gets `503 5.7.0 Error: access denied`."""
        self.access_denied = ""
        if await self.refuse_blocked():
            return
        if not self.s.delay_reject:
            verdict = await self.svc.engine.check_client(self.st)
            self.sleep += verdict.delay
            if verdict.reply is not None:
                self.reply(verdict.reply)
                self.error_count += 1
                self.access_denied = verdict.reply.line
                return
        self.reply(f"220 {self.s.banner}")

    async def refuse_blocked(self) -> bool:
        """A client blocked automatically, or in a blocked network (docs/blocks.md): `421
        4.3.2 Service currently unavailable; ...` and a CONNECT reject line; the session
        ends. At connect (instead of the greeting, or after an early one) and after XCLIENT."""
        refusal = await self.svc.blocks.refusal(self.client)
        if refusal is None:
            return False
        where, self.st.where = self.st.where, "CONNECT"
        self.log_reject("reject", refusal)
        self.st.where = where
        self.reply(refusal)
        return True

    def flag_pipelining(self, where: str, pending: bytes) -> None:
        if self.st.ill_pipelining:
            return
        self.st.ill_pipelining = True
        shown = escape(pending[:100])
        self.log(f"improper command pipelining after {where} from {self.namaddr}: {shown}")

    def over_hard_limit(self) -> bool:
        """Checked before each command: at the hard limit, say 421 and end the session."""
        if self.error_count < self.s.hard_error_limit:
            return False
        self.reply(f"421 4.7.0 {self.s.myhostname} Error: too many errors")
        self.log(f"too many errors after {self.st.where} from {self.namaddr}")
        self.closing = True
        return True

    def lost(self, event: Closed) -> None:
        if event.data_bytes is not None:
            self.stats.count(self.st.where.lower(), False)
            received = event.data_bytes + len(self.tx.bdat or b"")  # BDAT: all chunks
            self.log(f"lost connection after {self.st.where} ({received} bytes) "
                     f"from {self.namaddr}")
        elif self.st.where not in ("END-OF-MESSAGE",):
            self.log(f"lost connection after {self.st.where} from {self.namaddr}")

    def timed_out(self) -> None:
        self.reply(f"421 4.4.2 {self.s.myhostname} Error: timeout exceeded")
        received = self.conn.data_received()
        where = self.st.where if received is None else f"{self.st.where} ({received} bytes)"
        if received is not None:
            self.stats.count(self.st.where.lower(), False)
        self.log(f"timeout after {where} from {self.namaddr}")
        self.closing = True

    def finish(self) -> None:
        self.reset_transaction()
        self.svc.journal.finish()
        release(self.st.policy_pinned)
        self.log(f"disconnect from {self.namaddr} {self.stats.summary()}")

    def reset_transaction(self) -> None:
        if self.tx.incoming is not None:
            self.svc.store.abort(self.tx.incoming)
        self.tx = Transaction()
        self.st.reset_transaction()

    # --- commands ---------------------------------------------------------------------
    async def handle(self, event: Command | Message | Chunk) -> None:
        if isinstance(event, Message):
            await self.end_of_data(event)
        elif isinstance(event, Chunk):
            await self.bdat_chunk(event)
        else:
            await self.command(event)

    def bare_newline(self, message: bool = False, where: str = "") -> bool:
        """`smtpd_forbid_bare_newline = reject` (Postfix 3.7.11) for a command or message text
        with a bare <LF>: `550 5.5.2 HOST Error: bare <LF> received` and a `reject:` line
        (logged at the command before it, END-OF-MESSAGE or `where`). A command ends the
        session; message text ends the transaction only. Clients that match
        smtpd_forbid_bare_newline_exclusions (re-checked after XCLIENT) are not rejected;
        other values accept bare <LF> as a line end (decision 0002)."""
        if self.s.forbid_bare_newline != "reject" or self.svc.bare_newline_exempt(self.client):
            return False
        logged, self.st.where = self.st.where, where or self.st.where
        self.log_reject("reject", "bare <LF> received", self.st.recipient)
        self.st.where = logged
        self.reply(f"{self.s.bare_newline_reject_code} 5.5.2 {self.s.myhostname} Error: "
                   "bare <LF> received")
        if message:
            self.reset_transaction()
        else:
            self.closing = True
        return True

    async def command(self, cmd: Command) -> None:
        if self.auth_exchange is not None:  # the answer to a 334 challenge
            await self.auth_response(cmd)
            return
        if cmd.bare_newline and self.bare_newline():
            return
        if cmd.too_long:  # the warning's printable() rewrites smtpd's buffer in place
            line = printable(cmd.line, self.s.smtputf8_enable)
            self.warn(f"{self.namaddr}: request longer than {self.s.line_length_limit}: "
                      f"{line[:30]}...")
            tokens = tuple(smtpd_token(line))
            cmd = replace(cmd, line=line, tokens=tokens,
                          verb=tokens[0].value.upper() if tokens else "",
                          bad_utf8=not _utf8(line))
        if cmd.bad_utf8 and self.s.smtputf8_enable:
            self.reply("500 5.5.2 Error: bad UTF-8 syntax")
            self.error_count += 1
            return
        if not cmd.tokens:
            self.reply("500 5.5.2 Error: bad syntax")
            self.error_count += 1
            return
        verb = cmd.verb
        self.svc.metrics.command(verb)
        if verb in self.s.noop_commands:
            self.reply("250 2.0.0 Ok")
            self.count_junk()
            return
        handler = self.table.get(verb)
        if handler is None:
            self.st.where = "UNKNOWN"
            self.stats.count("unknown", False)
            if is_header_name(cmd.tokens[0].value) or self.svc.forbidden.match(cmd.tokens[0].value):
                shown = escape(cmd.line.encode("utf-8", "surrogateescape"))[:100]
                self.warn(f"non-SMTP command from {self.namaddr}: {shown}")
                self.reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
                self.closing = True
                return
        if self.access_denied and verb != "QUIT":
            if self.svc.journal.enabled:
                self.journal_denied(cmd)
            self.reply(f"503 5.7.0 Error: access denied for {self.namaddr}")
            if handler is not None:
                self.stats.count(verb.lower(), False)
            self.error_count += 1
            return
        if handler is None:
            self.reply("500 5.5.2 Error: command not recognized")
            self.error_count += 1
            return
        self.st.where = verb
        if self.tls_required(verb):
            return
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
        if not pending or self.st.ill_pipelining:
            return
        if self.st.protocol != "ESMTP" or verb not in _PIPELINE_OK:
            self.flag_pipelining(verb, pending)
            if self.s.forbid_unauth_pipelining:
                self.reply("554 5.5.0 Error: SMTP protocol synchronization")
                self.stats.count(verb.lower(), False)
                self.closing = True
