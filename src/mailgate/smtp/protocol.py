"""The sans-IO SMTP server connection: bytes in, events out; replies in, bytes out (RFC 5321).

In the style of h11: `receive_data()` feeds bytes, `next_event()` returns the next `Command`,
`Message`, `Chunk`, `Closed` or `NEED_DATA`; `send(reply)` returns the bytes to write and moves
the state itself (a `354` reply switches to message reading). A BDAT chunk is read after the
server accepted the command's syntax (`start_chunk`): Postfix reads it inside its BDAT
handler, so a BDAT refused before that (access denied, bad UTF-8) leaves its octets to be
read as commands. No I/O, no asyncio.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailgate.smtp.tokens import Token, smtpd_token


class Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"  # after a 354 reply: message text up to <CRLF>.<CRLF>
    BDAT = "bdat"  # reading a chunk of a fixed size
    CLOSED = "closed"


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Command:
    """One command line. `verb` is the upper-cased first token ('' for an empty line)."""

    verb: str
    line: str  # decoded text (UTF-8, bad bytes kept as surrogates), cut at the length limit
    tokens: tuple[Token, ...]
    too_long: bool = False  # the line was longer than line_length_limit and was cut
    bad_utf8: bool = False
    bare_newline: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """The text of a DATA transaction: dot-unstuffed, lines ending in LF."""

    content: bytes
    size: int  # bytes counted against message_size_limit (lines + CRLF)
    too_big: bool
    bare_newline: bool


@dataclass(frozen=True, slots=True)
class Chunk:
    """A BDAT chunk (RFC 3030): raw octets, no dot-stuffing."""

    data: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The client closed the connection; `data_bytes` counts message bytes received so far."""

    data_bytes: int | None  # not None when the connection was lost inside DATA or BDAT


Event = Command | Message | Chunk | Closed | NeedData


class ProtocolError(Exception):
    """Local misuse of the state machine (a bug in the caller, never the client's fault)."""


_LONE_DOT = re.compile(rb"(?m)^\.\n")
_UNSTUFF = re.compile(rb"(?m)^\.")
_END_OF_DATA = b"\r\n.\r\n"


def store_form(text: bytes) -> bytes:
    """Message text as Postfix 3.7.11 (`smtpd_forbid_bare_newline = normalize`) queues it:
    lines end in LF, one CR before each LF is dropped and every other CR becomes a space, so
    no bare CR is stored or relayed (decision 0035). BDAT content takes this alone."""
    text = text.replace(b"\r\n", b"\n")
    return text.replace(b"\r", b" ") if b"\r" in text else text


def unstuff(text: bytes) -> bytes:
    """DATA text (LF line ends) without its dot-stuffing (RFC 5321 4.5.2): a leading dot is
    removed; a lone-dot line that did not end the data (it touches a bare LF) is dropped, as
    Postfix 3.7.11 does with `normalize`."""
    if text.startswith(b".") or b"\n." in text:
        text = _UNSTUFF.sub(b"", _LONE_DOT.sub(b"", text))
    return text


class ServerConnection:
    """The server side of one SMTP connection, without I/O."""

    __slots__ = ("_bdat_discard", "_bdat_last", "_bdat_left", "_buf", "_closed", "_dropped", "_lead",
                 "_limit", "_line_limit", "_long_head", "_scan", "_too_big", "mode")

    def __init__(self, line_length_limit: int = 2048, message_size_limit: int = 10240000) -> None:
        self.mode = Mode.COMMAND
        self._buf = bytearray()
        self._line_limit = line_length_limit
        self._limit = message_size_limit
        self._closed = False
        self._long_head: bytes | None = None
        self._scan = -1
        self._lead = 0
        self._too_big = False
        self._dropped = 0
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_discard = False

    # --- input ------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; b"" means the client closed its side."""
        if not data:
            self._closed = True
        else:
            self._buf += data

    def data_received(self) -> int | None:
        """Message bytes received so far in DATA or BDAT (None in command mode)."""
        if self.mode is Mode.DATA:
            return self._dropped + max(len(self._buf) - self._lead, 0) if self._scan >= 0 \
                else len(self._buf)
        if self.mode is Mode.BDAT:
            return len(self._buf)
        return None

    def discard_input(self) -> int:
        """Drop command input received but not yet consumed (what a client pipelined after
        STARTTLS: plaintext that must not be read as if it came over TLS, CVE-2011-0411);
        returns how many bytes were dropped."""
        if self.mode is not Mode.COMMAND:
            return 0
        dropped = len(self._buf)
        self._buf.clear()
        return dropped

    def consume(self, count: int) -> None:
        """Drop the first `count` bytes of input (a PROXY header read before the session)."""
        del self._buf[:count]

    def set_line_limit(self, limit: int) -> None:
        """The longest command line from now on (SMTP AUTH responses have their own limit,
        smtpd_sasl_response_limit)."""
        self._line_limit = limit

    def buffered(self, limit: int = 100) -> bytes:
        """Input already received but not yet consumed (for the pipelining check)."""
        return bytes(self._buf[:limit]) if self._buf else b""

    def next_event(self) -> Event:
        """The next complete event, or NEED_DATA."""
        if self.mode is Mode.COMMAND:
            return self._next_command()
        if self.mode is Mode.DATA:
            return self._next_message()
        if self.mode is Mode.BDAT:
            return self._next_chunk()
        return NEED_DATA

    def _next_command(self) -> Event:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > self._line_limit:
                # A line longer than the limit: keep its head, skip the rest (Postfix smtp_get).
                if self._long_head is None:
                    self._long_head = bytes(buf[: self._line_limit])
                buf.clear()
            if self._closed:
                self.mode = Mode.CLOSED
                return Closed(None)
            return NEED_DATA
        raw = bytes(buf[:nl])
        del buf[: nl + 1]
        bare = not raw.endswith(b"\r")
        too_long = False
        if self._long_head is not None:
            raw, self._long_head, too_long = self._long_head, None, True
        raw = raw.rstrip(b"\r")
        if len(raw) >= self._line_limit:  # Postfix: a full buffer is "longer than" the limit
            raw, too_long = raw[: self._line_limit], True
        line: str | None
        try:  # smtpd checks UTF-8 over the whole line, a NUL and what follows it included
            line, bad = raw.decode("utf-8"), False
        except UnicodeDecodeError:
            line, bad = None, True
        nul = raw.find(b"\0")
        if nul >= 0:
            line = raw[:nul].decode("utf-8", "surrogateescape")
        elif line is None:
            line = raw.decode("utf-8", "surrogateescape")
        tokens = tuple(smtpd_token(line))
        verb = tokens[0].value.upper() if tokens else ""
        return Command(verb, line, tokens, too_long, bad, bare)

    def _next_message(self) -> Event:
        buf = self._buf
        if self._scan < 0:
            # Entering DATA: a virtual CRLF in front lets one search find ".<CRLF>" as the
            # first line too. Only <CRLF>.<CRLF> ends the text (RFC 5321 4.1.1.4): never
            # <LF>.<LF>, <LF>.<CRLF> or <CR>.<CR>.
            buf[:0] = b"\r\n"
            self._scan = 0
            self._lead = 2
        end = buf.find(_END_OF_DATA, self._scan)
        if end < 0:
            if self._closed:
                self.mode = Mode.CLOSED
                return Closed(self._dropped + len(buf) - self._lead)
            tail = len(buf) - 4
            if tail > 0:
                self._scan = tail
                if self._limit and self._dropped + tail - self._lead > self._limit:
                    self._too_big = True  # discard what can never be stored
                    self._dropped += tail - self._lead
                    del buf[:tail]
                    self._lead = 0
                    self._scan = 0
            return NEED_DATA
        body = b"" if self._too_big else bytes(buf[self._lead : end + 2])
        received = self._dropped + end + 5 - self._lead
        del buf[: end + 5]
        return self._finish_message(body, received)

    def _finish_message(self, body: bytes, received: int) -> Message:
        bare = body.count(b"\n") != body.count(b"\r\n")
        text = unstuff(body.replace(b"\r\n", b"\n"))
        if b"\r" in text:  # as store_form(): each CR left is a space (decision 0035)
            text = text.replace(b"\r", b" ")
        size = received - 3  # the terminating ".<CRLF>" is not message text
        too_big = self._too_big or (self._limit > 0 and size > self._limit)
        self._reset_data()
        self.mode = Mode.COMMAND
        return Message(b"" if too_big else text, size, too_big, bare)

    def _reset_data(self) -> None:
        self._scan = -1
        self._lead = 0
        self._too_big = False
        self._dropped = 0

    def _next_chunk(self) -> Event:
        buf = self._buf
        if self._bdat_discard and buf:
            take = min(len(buf), self._bdat_left)
            del buf[:take]
            self._bdat_left -= take
            if self._bdat_left == 0:
                self.mode = Mode.COMMAND
                return Chunk(b"", self._bdat_last)
        if len(buf) < self._bdat_left:
            if self._closed:
                self.mode = Mode.CLOSED
                return Closed(len(buf))
            return NEED_DATA
        data = bytes(buf[: self._bdat_left])
        del buf[: self._bdat_left]
        self.mode = Mode.COMMAND
        return Chunk(data, self._bdat_last)

    # --- state changes -------------------------------------------------------------------
    def start_data(self) -> None:
        """Switch to message reading (what sending a 354 reply does)."""
        if self.mode is not Mode.COMMAND:
            raise ProtocolError(f"start_data in mode {self.mode}")
        self.mode = Mode.DATA
        self._reset_data()

    def start_chunk(self, size: int, last: bool, discard: bool = False) -> None:
        """Read `size` octets of BDAT data next (call right after the BDAT command).

        With `discard`, the octets are read and dropped (the chunk event carries no data).
        """
        if self.mode is not Mode.COMMAND:
            raise ProtocolError(f"start_chunk in mode {self.mode}")
        self.mode = Mode.BDAT
        self._bdat_left = size
        self._bdat_last = last
        self._bdat_discard = discard
        if size == 0:
            self._bdat_discard = False

    def close(self) -> None:
        self.mode = Mode.CLOSED

    # --- output -----------------------------------------------------------------------
    def send(self, code: int, lines: list[str] | tuple[str, ...] | str) -> bytes:
        """Format a reply: `code` and one or more text lines, CRLF-terminated (RFC 5321 4.2).
        A 354 (the answer to DATA, RFC 5321 4.1.1.4) switches to reading the message text;
        raises ProtocolError when that is not expected (not in command mode)."""
        if code == 354:
            self.start_data()
        if isinstance(lines, str):
            return f"{code} {lines}\r\n".encode("utf-8", "surrogateescape")
        parts = [f"{code}-{text}\r\n" for text in lines[:-1]]
        parts.append(f"{code} {lines[-1]}\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape")
