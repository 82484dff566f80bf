"""The sans-IO SMTP core driven by random command sequences (hypothesis.stateful): every
complete command line yields exactly one Command (answered with exactly one reply), DATA and
BDAT transitions follow the replies, the mode is always a Mode and the buffers stay within
what the settings allow, even when a client sends megabytes without a newline."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mailgate.smtp.protocol import NEED_DATA, Chunk, Closed, Command, Message, Mode, ServerConnection
from support.fuzzing import split_points

LINE = 100
SIZE = 2000
VERBS = ("EHLO", "HELO", "MAIL", "RCPT", "RSET", "NOOP", "VRFY", "ETRN", "QUIT", "XCLIENT",
         "mail", "Rcpt", "DATA", "BDAT")
ARG = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=40)
LINE_BYTES = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))


class SmtpMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn = ServerConnection(LINE, SIZE)
        self.replies = 0
        self.lines = 0

    # --- helpers ------------------------------------------------------------------------
    def feed(self, data: bytes, salt: int) -> list[object]:
        events: list[object] = []
        for piece in split_points(data, salt) or [b""]:
            if piece:
                self.conn.receive_data(piece)
            while (ev := self.conn.next_event()) is not NEED_DATA:
                events.append(ev)
            self.check_bounds()
        return events

    def one_command(self, line: bytes, salt: int) -> Command:
        self.lines += 1
        events = self.feed(line + b"\r\n", salt)
        assert len(events) == 1, events
        ev = events[0]
        assert isinstance(ev, Command)
        assert len(ev.line.encode("utf-8", "surrogateescape")) <= LINE
        out = self.conn.send(250, "2.0.0 Ok")  # exactly one reply per command
        assert out == b"250 2.0.0 Ok\r\n"
        self.replies += 1
        return ev

    def check_bounds(self) -> None:
        conn = self.conn
        assert conn.mode in Mode
        limit = {Mode.COMMAND: LINE, Mode.DATA: SIZE + 6, Mode.BDAT: conn._bdat_left,
                 Mode.CLOSED: 1 << 30}[conn.mode]
        assert len(conn._buf) <= limit, (conn.mode, len(conn._buf))

    # --- rules --------------------------------------------------------------------------
    @precondition(lambda self: self.conn.mode is Mode.COMMAND)
    @rule(verb=st.sampled_from(VERBS), arg=ARG, salt=st.integers(0, 50))
    def command(self, verb: str, arg: str, salt: int) -> None:
        ev = self.one_command(f"{verb} {arg}".encode(), salt)
        assert ev.verb == verb.upper()

    @precondition(lambda self: self.conn.mode is Mode.COMMAND)
    @rule(line=LINE_BYTES, salt=st.integers(0, 50))
    def any_line(self, line: bytes, salt: int) -> None:
        ev = self.one_command(line, salt)
        assert ev.too_long == (len(line.rstrip(b"\r")) > LINE)

    @precondition(lambda self: self.conn.mode is Mode.COMMAND)
    @rule(lines=st.lists(st.sampled_from((b"NOOP", b"RSET", b"HELO x")), min_size=2, max_size=6))
    def pipelined(self, lines: list[bytes]) -> None:
        events = self.feed(b"".join(line + b"\r\n" for line in lines), 0)
        assert [e.verb for e in events if isinstance(e, Command)] == [
            line.split()[0].decode() for line in lines]
        self.lines += len(lines)
        self.replies += len(events)

    @precondition(lambda self: self.conn.mode is Mode.COMMAND)
    @rule(body=st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(
        b"\n", b"")), max_size=8), accept=st.booleans(), salt=st.integers(0, 50))
    def data(self, body: list[bytes], accept: bool, salt: int) -> None:
        self.one_command(b"DATA", salt)
        if not accept:  # a 5xx reply: no transition, the text is read as commands
            return
        self.conn.start_data()
        stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                           for line in body)
        events = self.feed(stuffed + b".\r\n", salt)
        assert len(events) == 1 and isinstance(events[0], Message)
        want = b"".join(line + b"\n" for line in body)
        assert events[0].too_big == (len(stuffed) > SIZE)
        assert events[0].content == (b"" if events[0].too_big else want)
        assert self.conn.mode is Mode.COMMAND

    @precondition(lambda self: self.conn.mode is Mode.COMMAND)
    @rule(data=st.binary(max_size=300), last=st.booleans(), discard=st.booleans(),
          salt=st.integers(0, 50))
    def bdat(self, data: bytes, last: bool, discard: bool, salt: int) -> None:
        ev = self.one_command(f"BDAT {len(data)}{' LAST' if last else ''}".encode(), salt)
        assert ev.tokens[1].value == str(len(data))
        self.conn.start_chunk(len(data), last, discard)
        events = self.feed(data, salt)
        assert events == [Chunk(b"" if discard and data else data, last)]

    @precondition(lambda self: self.conn.mode is Mode.COMMAND)
    @rule(size=st.sampled_from((LINE + 1, 10 * LINE, 300_000)), salt=st.integers(0, 50))
    def flood_without_newline(self, size: int, salt: int) -> None:
        """A long line arrives in pieces: bounded while it lasts, one cut Command at its end."""
        for _ in range(0, size, 65536):
            self.conn.receive_data(b"A" * min(65536, size))
            assert self.conn.next_event() is NEED_DATA
            self.check_bounds()
        ev = self.one_command(b"", salt)
        assert ev.too_long and ev.line == "A" * LINE

    @precondition(lambda self: self.conn.mode is not Mode.CLOSED)
    @rule(tail=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")))
    def close(self, tail: bytes) -> None:
        mode = self.conn.mode
        events = self.feed(tail, 0)
        assert events == [] or mode is Mode.BDAT
        self.conn.receive_data(b"")
        ev = self.conn.next_event()
        if mode is Mode.BDAT and events:
            return  # the chunk completed with the tail: back in command mode, not closed
        assert isinstance(ev, Closed)
        assert (ev.data_bytes is None) == (mode is Mode.COMMAND)
        assert self.conn.mode is Mode.CLOSED
        assert self.conn.next_event() is NEED_DATA

    @precondition(lambda self: self.conn.mode is Mode.CLOSED)
    @rule()
    def reconnect(self) -> None:
        self.conn = ServerConnection(LINE, SIZE)

    @invariant()
    def one_reply_per_line(self) -> None:
        assert self.replies == self.lines

    @invariant()
    def bounded(self) -> None:
        self.check_bounds()


TestSmtpMachine = SmtpMachine.TestCase
TestSmtpMachine.settings = settings(settings.default, stateful_step_count=25)
