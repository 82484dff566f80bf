"""HELO/EHLO and the commands outside a mail transaction (RSET, NOOP, QUIT, VRFY, ETRN, HELP,
STARTTLS, AUTH), as Postfix 3.7 smtpd answers them.

`SessionCommands` is mixed into `Session`; it uses the session's reply and log methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import CheckState
from mailgate.engine.reply import Reply
from mailgate.engine.resolve import Resolution
from mailgate.maps.casefold import printable
from mailgate.server import xclient
from mailgate.server.transaction import Services, Transaction
from mailgate.smtp.hostnames import valid_hostname, valid_mailhost_literal
from mailgate.smtp.protocol import Command
from mailgate.smtp.tokens import extract_addr

# smtpd_discard_ehlo_keywords names in Postfix's ehlo_mask table order, as its "discarding EHLO
# keywords" log line shows them (SMTPUTF8 under its C macro name: a Postfix 3.7 slip).
_EHLO_MASK_NAMES = (
    ("8BITMIME", "8BITMIME"), ("AUTH", "AUTH"), ("ETRN", "ETRN"), ("PIPELINING", "PIPELINING"),
    ("SIZE", "SIZE"), ("VERP", "VERP"), ("VRFY", "VRFY"), ("XCLIENT", "XCLIENT"),
    ("XFORWARD", "XFORWARD"), ("STARTTLS", "STARTTLS"),
    ("ENHANCEDSTATUSCODES", "ENHANCEDSTATUSCODES"), ("DSN", "DSN"),
    ("SMTPUTF8", "EHLO_MASK_SMTPUTF8"), ("CHUNKING", "CHUNKING"))


def neuter(name: str) -> str:
    """smtpd.c keeps the HELO name with its NEUTER_CHARACTERS (` <>()\\";@`) as `?`."""
    return name.translate(_NEUTER)


_NEUTER = str.maketrans({c: "?" for c in ' <>()\\";@'})


class SessionParts:
    """What the session-level mixins (these commands, STARTTLS) use of the Session: its
    settings, services and state, and the methods below (declared for the type checker
    only; at run time the class is empty)."""

    s: SmtpdSettings
    svc: Services
    tx: Transaction
    st: CheckState
    event_rate: Callable[[str, bool], int | None]
    counted_rate: Callable[[str], Awaitable[int | None]]
    service: str

    if TYPE_CHECKING:  # provided by Session
        @property
        def namaddr(self) -> str:
            raise NotImplementedError

        def reply(self, text: str | Reply, more: tuple[str, ...] = ()) -> None:
            raise NotImplementedError

        def log(self, text: str) -> None:
            raise NotImplementedError

        def warn(self, text: str) -> None:
            raise NotImplementedError

        def reset_transaction(self) -> None:
            raise NotImplementedError

        def auth_forget(self) -> None:  # provided by AuthCommands
            raise NotImplementedError

        def sasl_logged(self) -> str:
            raise NotImplementedError

        def received_auth(self) -> str:
            raise NotImplementedError


class SessionCommands(SessionParts):
    """Handlers of the session-level commands; the attributes below are the Session's."""

    sleep: float
    xclient_allowed: bool

    if TYPE_CHECKING:  # provided by the other mixins
        @property
        def starttls_offered(self) -> bool:
            raise NotImplementedError

        async def check_recipient(self, recipient: str, resolution: Resolution | None) -> bool:
            raise NotImplementedError

        async def auth_keywords(self) -> list[str]:
            raise NotImplementedError

    # HELO / EHLO ------------------------------------------------------------------------
    async def helo_cmd(self, cmd: Command) -> bool:
        return await self._helo(cmd, "HELO")

    async def ehlo_cmd(self, cmd: Command) -> bool:
        return await self._helo(cmd, "EHLO")

    async def _helo(self, cmd: Command, verb: str) -> bool:
        if len(cmd.tokens) < 2:
            self.reply(f"501 Syntax: {verb} hostname")
            return False
        name = " ".join(t.value for t in cmd.tokens[1:])
        self.svc.engine.started_helo(name)
        if not self.s.delay_reject:
            verdict = await self.svc.engine.check_helo(self.st, name)
            self.sleep += verdict.delay
            if verdict.reply is not None:
                self.reply(verdict.reply)
                return False
        self.reset_transaction()
        self.st.helo = neuter(printable(name, self.s.smtputf8_enable))
        if verb == "HELO":  # keeps ESMTP after EHLO: smtpd.c never downgrades the protocol
            self.reply(f"250 {self.s.myhostname}")
            return True
        self.st.protocol = "ESMTP"
        self.log_discarded_keywords()
        lines = [self.s.myhostname, *self.ehlo_keywords(await self.auth_keywords())]
        self.reply(f"250 {lines[0]}", tuple(lines[1:]))
        return True

    def log_discarded_keywords(self) -> None:
        """`discarding EHLO keywords: ...` unless the list has SILENT-DISCARD, or (smtpd.c
        tests the wrong bit) ENHANCEDSTATUSCODES."""
        discard = self.s.discard_ehlo_keywords
        if not discard or "SILENT-DISCARD" in discard or "ENHANCEDSTATUSCODES" in discard:
            return
        names = [shown for name, shown in _EHLO_MASK_NAMES if name in discard]
        if names:
            self.log("discarding EHLO keywords: " + " ".join(names))

    def ehlo_keywords(self, auth: list[str]) -> list[str]:
        words = ["PIPELINING"]
        words.append(f"SIZE {self.s.message_size_limit}" if self.s.message_size_limit else "SIZE")
        if not self.s.disable_vrfy:
            words.append("VRFY")
        words.append("ETRN")
        if self.starttls_offered:
            words.append("STARTTLS")
        words += auth  # smtpd_sasl_auth_enable: already filtered by the discard list
        if self.xclient_allowed:
            words.append("XCLIENT " + xclient.ATTRIBUTES)
        words += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.s.smtputf8_enable:
            words.append("SMTPUTF8")
        words.append("CHUNKING")
        return [w for w in words if w.split()[0] not in self.s.discard_ehlo_keywords]

    # The rest -----------------------------------------------------------------------------
    async def rset_cmd(self, cmd: Command) -> bool:
        if len(cmd.tokens) != 1:
            self.reply("501 5.5.4 Syntax: RSET")
            return False
        self.reset_transaction()
        self.svc.journal.reset()
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
        smtputf8 = (self.s.smtputf8_offered and len(words) > 1
                    and words[-1].upper() == "SMTPUTF8")
        if smtputf8:
            words.pop()
        if not words:
            self.reply("501 5.5.4 Syntax: VRFY address" +
                       (" [SMTPUTF8]" if self.s.smtputf8_enable else ""))
            return False
        arg = " ".join(words)
        extracted = extract_addr(arg, False)
        engine = self.svc.engine
        resolution = None if extracted.illegal else engine.address(extracted.address)
        if extracted.illegal or not extracted.address or \
                engine.bad_address(resolution, smtputf8):
            self.warn(f"Illegal address syntax from {self.namaddr} in VRFY command: {arg}")
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        if not await self.check_recipient(extracted.address, resolution):
            return False
        self.reply(f"252 2.0.0 {arg}")
        return True

    async def etrn_cmd(self, cmd: Command) -> bool:
        if self.s.helo_required and not self.st.helo:
            self.reply("503 Error: send HELO/EHLO first")
            return False
        if self.st.sender is not None:
            self.reply("503 Error: MAIL transaction in progress")
            return False
        if len(cmd.tokens) != 2:
            self.reply("500 Syntax: ETRN domain")
            return False
        domain = cmd.tokens[1].value
        if domain[:1] in ("@", "#"):
            domain = domain[1:]
        if not valid_hostname(domain) and not (
                domain.startswith("[") and domain.endswith("]")
                and valid_mailhost_literal(domain[1:-1])):
            self.reply("501 Error: invalid parameter syntax")
            return False
        verdict = await self.svc.engine.check_etrn(self.st, domain)
        self.sleep += verdict.delay
        if verdict.reply is not None:
            self.reply(verdict.reply)
            return False
        if self.svc.flush_domains(domain):
            self.svc.flush_queue()
            self.reply("250 Queuing started")
            return True
        self.warn(f"reject: ETRN {domain[:100]}... from {self.namaddr}")
        self.reply(f"459 <{domain}>: service unavailable")
        return False

    async def help_cmd(self, cmd: Command) -> bool:
        self.reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY ETRN QUIT")
        return True
