"""postscreen's deep protocol tests and its built-in SMTP engine (postscreen_smtpd.c), sans-IO.

One command line at a time: the bare newline, non-SMTP command and pipelining tests, the
command count limit, the tests' passing at RCPT. As Postfix's engine (`dummy`), it also
answers every command itself and rejects every recipient: clients that failed a test under
`enforce`. Watching a real smtpd session (beyond Postfix, not `dummy`), it leaves the
commands to smtpd and says when the client passed, so that it goes on in the same
connection; a failure under `enforce` turns it into the engine for the rest of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailgate.server.commands import ForbiddenCommands, is_header_name
from mailgate.server.postscreen import texts
from mailgate.server.postscreen.record import Test
from mailgate.server.postscreen.settings import Action
from mailgate.server.postscreen.state import ScreenState
from mailgate.smtp.protocol import Command

# postscreen_smtpd.c command_table: the commands it knows; XCLIENT, XFORWARD and AUTH are
# known but disabled
_COMMANDS = ("HELO", "EHLO", "STARTTLS", "XCLIENT", "XFORWARD", "AUTH", "MAIL", "RCPT", "DATA",
             "BDAT", "RSET", "NOOP", "VRFY", "ETRN", "QUIT")
_DISABLED = frozenset({"XCLIENT", "XFORWARD", "AUTH"})
UNIMPLEMENTED = "UNIMPLEMENTED"  # `where` after a command it does not know
NOT_RECOGNIZED = "502 5.5.2 Error: command not recognized\r\n"


@dataclass(frozen=True, slots=True)
class Step:
    """What postscreen makes of one command line."""

    reply: str = ""  # its own answer ("": the smtpd session answers)
    drop: bool = False  # the connection ends after `reply` (the final reply)
    passed: bool = False  # every test passed at this RCPT: smtpd takes the client over


def split_word(text: str) -> tuple[str | None, str]:
    """mystrtok(&ptr, " "): the first space-separated word and what follows its separator."""
    text = text.lstrip(" ")
    if not text:
        return None, ""
    word, _, rest = text.partition(" ")
    return word, rest


def extract_addr(text: str) -> str:
    """psc_extract_addr(): the address after `FROM:` / `TO:`, quotes and backslashes
    removed, a source route cut off (more lenient than smtpd: it is never delivered)."""
    text = text.lstrip(" ")
    stop = " "
    if text.startswith("<"):
        text, stop = text[1:], ">"
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if not quoted and ch == stop:
            break
        if ch == '"':
            quoted = not quoted
        else:
            if ch == "\\":
                i += 1
                if i >= len(text):
                    break
                ch = text[i]
            out.append(ch)
        i += 1
    addr = "".join(out)
    if addr.startswith("@") and ":" in addr:
        addr = addr.split(":", 1)[1]
    return addr


class SmtpdTests:
    """The deep tests for one connection; `dummy`: postscreen answers every command."""

    def __init__(self, state: ScreenState, forbidden: ForbiddenCommands,
                 clock: Callable[[], float], dummy: bool) -> None:
        self.state = state
        self.forbidden = forbidden
        self.clock = clock  # the epoch time (expiry stamps)
        self.dummy = dummy
        self.settings = state.settings

    def start(self) -> str:
        """psc_smtpd_tests(): after a failed early test every deep test runs (for the log);
        the greeting, except to a client that talked first."""
        record = self.state.record
        if record.any_failed:
            enabled = {Test.PIPELINING, Test.NON_SMTP, Test.BARE_NEWLINE}
            record.todo |= enabled
        if Test.PREGREET in record.failed:
            return ""
        return f"220 {self.settings.banner}\r\n"

    # --- the tests ------------------------------------------------------------------------
    def _testing(self, test: Test) -> bool:
        record = self.state.record
        return test in record.todo and test not in self.state.skipped

    def _failed(self, test: Test, action: Action, drop: str) -> Step | None:
        """A logged failure: a Step when the connection ends; `enforce` makes this the
        engine for the rest of the connection."""
        if self.state.fail(test, action, drop, texts.PROTOCOL_ERROR_ENFORCE, int(self.clock())):
            return Step(drop, drop=True)
        if action is Action.ENFORCE:
            self.dummy = True
        return None

    def line(self, cmd: Command, pending: bytes) -> Step:
        """One command line (`pending`: input received after it) through postscreen."""
        st, s = self.state, self.settings
        if cmd.too_long:
            st.log(f"COMMAND LENGTH LIMIT from {st.client} after {st.where}")
            return self._drop(texts.generic_421(s.myhostname))
        raw = cmd.line.encode("utf-8", "surrogateescape")
        if cmd.bare_newline and self._testing(Test.BARE_NEWLINE):
            st.log(f"BARE NEWLINE from {st.client} after {texts.escaped(raw)}")
            step = self._failed(Test.BARE_NEWLINE, s.bare_newline_action,
                                texts.PROTOCOL_ERROR_DROP)
            if step is not None:
                return self._drop(step.reply)
        command, args = split_word(cmd.line)
        saved_where = st.where
        name = (command or "").upper() if (command or "").upper() in _COMMANDS else None
        st.where = name or UNIMPLEMENTED
        word = texts.printable_ascii(command or "")[:100]
        if name is None and self._testing(Test.NON_SMTP) and (
                is_header_name(command or "") or self.forbidden.match(command or "")):
            shown = texts.escaped(args.encode("utf-8", "surrogateescape"))
            st.log(f"NON-SMTP COMMAND from {st.client} after {saved_where}: {word} {shown}")
            step = self._failed(Test.NON_SMTP, s.non_smtp_command_action, texts.NON_SMTP_DROP)
            if step is not None:
                return self._drop(step.reply)
        if name != "BDAT" and pending and self._testing(Test.PIPELINING):
            st.log(f"COMMAND PIPELINING from {st.client} after {word}: "
                   f"{texts.escaped(pending)}")
            step = self._failed(Test.PIPELINING, s.pipelining_action,
                                texts.PROTOCOL_ERROR_DROP)
            if step is not None:
                return self._drop(step.reply)
        if name == "RCPT":
            self._pass_deep_tests()
        st.command_count += 1
        if st.command_count > s.command_count_limit and name != "QUIT":
            st.log(f"COMMAND COUNT LIMIT from {st.client} after {saved_where}")
            return self._drop(texts.generic_421(s.myhostname))
        return self._execute(name, args)

    def _pass_deep_tests(self) -> None:
        """The deep tests pass when the client got as far as RCPT (it can still fail them
        with a later command)."""
        record = self.state.record
        now = int(self.clock())
        for test, ttl in ((Test.BARE_NEWLINE, self.settings.bare_newline_ttl),
                          (Test.NON_SMTP, self.settings.non_smtp_command_ttl),
                          (Test.PIPELINING, self.settings.pipelining_ttl)):
            if test in record.todo and test not in record.passed | record.failed:
                record.passes(test, now + ttl)

    def _drop(self, reply: str) -> Step:
        self.state.drop(reply)
        return Step(reply, drop=True)

    def timeout(self) -> Step:
        """The command did not arrive within postscreen_command_time_limit."""
        st = self.state
        st.log(f"COMMAND TIME LIMIT from {st.client} after {st.where}")
        return self._drop(texts.timeout_421(self.settings.myhostname))

    def hangup(self, now: float) -> None:
        """psc_hangup_event(): the client went away; not a test failure."""
        st = self.state
        st.hangup = st.noforward = True
        st.log(texts.hangup(now - st.started, st.addr, st.port, st.test_name))

    # --- the commands -----------------------------------------------------------------------
    def _execute(self, name: str | None, args: str) -> Step:
        if not self.dummy:
            return self._watch(name, args)
        if name is None or name in _DISABLED:
            return Step(NOT_RECOGNIZED)
        if name == "STARTTLS":  # mailgate's engine offers no TLS (docs/postscreen.md)
            return Step("502 5.5.1 Error: command not implemented\r\n")
        handler: Callable[[str], Step] = getattr(self, f"_{name.lower()}")
        return handler(args)

    def _watch(self, name: str | None, args: str) -> Step:
        """A real smtpd session answers; postscreen keeps what its engine would know, and
        answers what it does not know and DATA and BDAT (no recipient can have been accepted
        yet) itself; says when the client passed."""
        if name is None:  # what smtpd does not know either, answered as postscreen does
            return Step(NOT_RECOGNIZED)
        if name in ("DATA", "BDAT"):
            return self._data(args) if name == "DATA" else self._bdat(args)
        if name in ("HELO", "EHLO", "MAIL", "RSET"):
            handler: Callable[[str], Step] = getattr(self, f"_{name.lower()}")
            handler(args)
        record = self.state.record
        if name == "RCPT" and record.all_passed() and not record.any_failed:
            return Step(passed=True)
        return Step()

    def _helo(self, args: str) -> Step:
        name, _ = split_word(args)
        if name is None:
            return Step("501 Syntax: HELO hostname\r\n")
        self.state.helo, self.state.sender = name, None
        return Step(f"250 {self.settings.myhostname}\r\n")

    def _ehlo(self, args: str) -> Step:
        name, _ = split_word(args)
        if name is None:
            return Step("501 Syntax: EHLO hostname\r\n")
        self.state.helo, self.state.sender = name, None
        self.state.protocol = "ESMTP"
        return Step(self._ehlo_reply())

    def _ehlo_reply(self) -> str:
        """psc_smtpd_format_ehlo_reply(): no PIPELINING (that is the test), no AUTH."""
        s = self.settings
        size = f"SIZE {s.message_size_limit}" if s.message_size_limit > 0 else "SIZE"
        words = [size, "VRFY", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if s.disable_vrfy:
            words.remove("VRFY")
        if s.smtputf8_enable:
            words.append("SMTPUTF8")
        words.append("CHUNKING")
        words = [w for w in words if w.split()[0] not in s.discard_ehlo_keywords]
        lines = [s.myhostname, *words]
        return "".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                       for i, line in enumerate(lines))

    def _mail(self, args: str) -> Step:
        st = self.state
        if self.settings.helo_required and st.helo is None:
            return Step("503 5.5.1 Error: send HELO/EHLO first\r\n")
        if st.sender is not None:
            return Step("503 5.5.1 Error: nested MAIL command\r\n")
        if ":" not in args:
            return Step("501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
        st.sender = extract_addr(args.split(":", 1)[1])
        return Step("250 2.1.0 Ok\r\n")

    def _rcpt(self, args: str) -> Step:
        st = self.state
        if st.sender is None:
            return Step("503 5.5.1 Error: need MAIL command\r\n")
        if ":" not in args:
            return Step("501 5.5.4 Syntax: RCPT TO:<address>\r\n")
        addr = extract_addr(args.split(":", 1)[1])
        reply = texts.soften(st.rcpt_reply) if self.settings.soft_bounce else st.rcpt_reply
        st.log(f"NOQUEUE: reject: RCPT from {st.client}: {reply[:-2]}; from=<{st.sender}>, "
               f"to=<{addr}>, proto={st.protocol}, helo=<{st.helo or ''}>")
        return Step(st.rcpt_reply)

    def _data(self, args: str) -> Step:
        st = self.state
        st.log(f"DATA without valid RCPT from {st.client}")
        if split_word(args)[0] is not None:
            return self._drop("501 5.5.4 Syntax: DATA\r\n")
        if st.sender is None:
            return self._drop("503 5.5.1 Error: need RCPT command\r\n")
        return self._drop("554 5.5.1 Error: no valid recipients\r\n")

    def _bdat(self, args: str) -> Step:
        st = self.state
        st.log(f"BDAT without valid RCPT from {st.client}")
        if "CHUNKING" in self.settings.discard_ehlo_keywords:
            return self._drop("502 5.5.1 Error: command not implemented\r\n")
        if split_word(args)[0] is None:
            return self._drop("501 5.5.4 Syntax: BDAT count [LAST]\r\n")
        if st.sender is None:
            return self._drop("554 5.5.1 Error: need RCPT command\r\n")
        return self._drop("554 5.5.1 Error: no valid recipients\r\n")

    def _rset(self, args: str) -> Step:
        self.state.sender = None
        return Step("250 2.0.0 Ok\r\n")

    def _noop(self, args: str) -> Step:
        return Step("250 2.0.0 Ok\r\n")

    def _vrfy(self, args: str) -> Step:
        if split_word(args)[0] is None:
            return Step("501 5.5.4 Syntax: VRFY address\r\n")
        if self.settings.disable_vrfy:
            return Step("502 5.5.1 VRFY command is disabled\r\n")
        return Step(self.state.rcpt_reply)

    def _etrn(self, args: str) -> Step:
        if self.settings.helo_required and self.state.helo is None:
            return Step("503 5.5.1 Error: send HELO/EHLO first\r\n")
        if split_word(args)[0] is None:
            return Step("500 Syntax: ETRN domain\r\n")
        return Step("458 Unable to queue messages\r\n")

    def _quit(self, args: str) -> Step:
        return self._drop(texts.BYE)
