"""One SMTP or LMTP client connection: replies read, commands sent, STARTTLS, and the failure
texts Postfix's smtp(8) puts into `status=` lines (`host X[A] said: … (in reply to … command)`)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
from dataclasses import dataclass, field

_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    helo: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0
    data_xfer: float = 180.0
    data_done: float = 600.0


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply as Postfix logs it: code, then the lines joined by spaces."""
        return f"{self.code} " + " ".join(self.lines)

    @property
    def dsn(self) -> str:
        """The enhanced status code of the reply, or one made from the reply code."""
        m = _DSN.match(self.lines[0] if self.lines else "")
        if m and m.group(1) == str(self.code)[0]:
            return m.group(0)
        return f"{str(self.code)[0]}.0.0"


class Failure(Exception):
    """A delivery problem: `text` for the log and the bounce, `dsn`, and whether it is final."""

    def __init__(self, text: str, dsn: str, final: bool = False,
                 next_host: bool = True) -> None:
        super().__init__(text)
        self.text, self.dsn, self.final = text, dsn, final
        self.next_host = next_host  # another MX host may do better (connect, greeting)


@dataclass
class Connection:
    """An open, greeted connection; `relay` is Postfix's `host[addr]:port` (or the path)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str
    relay: str
    lmtp: bool
    timeouts: Timeouts
    extensions: set[str] = field(default_factory=set)
    used: float = 0.0

    @property
    def peer(self) -> str:
        return self.relay.rsplit(":", 1)[0] if not self.relay.startswith("/") else self.relay

    async def reply(self, timeout: float, stage: str) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), timeout)
            except TimeoutError:
                raise Failure(f"conversation with {self.peer} timed out while {stage}",
                              "4.4.2") from None
            except (ConnectionError, OSError):
                raw = b""
            if not raw.endswith(b"\n"):
                raise Failure(f"lost connection with {self.peer} while {stage}", "4.4.2")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise Failure(f"conversation with {self.peer} failed while {stage}: "
                              f"malformed reply: {line[:100]}", "4.5.0")
            code = int(line[:3])
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(code, tuple(lines))

    async def command(self, text: str, timeout: float, stage: str) -> Reply:
        try:
            self.writer.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (TimeoutError, ConnectionError, OSError):
            raise Failure(f"lost connection with {self.peer} while {stage}", "4.4.2") from None
        return await self.reply(timeout, stage)

    async def hello(self, myhostname: str, tls: ssl.SSLContext | None) -> None:
        """EHLO (LHLO for LMTP), then STARTTLS when offered and wanted, and EHLO again."""
        verb = "LHLO" if self.lmtp else "EHLO"
        stage = "performing the LHLO handshake" if self.lmtp else "performing the EHLO handshake"
        reply = await self.command(f"{verb} {myhostname}", self.timeouts.helo, stage)
        if reply.code // 100 != 2 and not self.lmtp:
            reply = await self.command(f"HELO {myhostname}", self.timeouts.helo,
                                       "performing the HELO handshake")
        if reply.code // 100 != 2:
            raise said(self, reply, verb if reply.code else "HELO", next_host=True)
        self.extensions = {x.split()[0].upper() for x in reply.lines[1:] if x}
        if tls is not None and "STARTTLS" in self.extensions and not self.lmtp:
            answer = await self.command("STARTTLS", self.timeouts.helo, "sending STARTTLS")
            if answer.code == 220:
                await self._start_tls(tls)
                reply = await self.command(f"EHLO {myhostname}", self.timeouts.helo, stage)
                if reply.code // 100 != 2:
                    raise said(self, reply, "EHLO", next_host=True)
                self.extensions = {x.split()[0].upper() for x in reply.lines[1:] if x}

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        try:
            await asyncio.wait_for(self.writer.start_tls(
                context, server_hostname=self.host or None), self.timeouts.helo)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise Failure(f"Cannot start TLS: handshake failure with {self.peer}: {exc}",
                          "4.7.5") from None

    async def send_body(self, content: bytes, line_length_limit: int = 998) -> None:
        """The message as `data_text()` puts it, then `.`."""
        try:
            self.writer.write(data_text(content, line_length_limit) + b".\r\n")
            await asyncio.wait_for(self.writer.drain(), self.timeouts.data_xfer)
        except TimeoutError:
            raise Failure(f"conversation with {self.peer} timed out while sending message "
                          "body", "4.4.2") from None
        except (ConnectionError, OSError):
            raise Failure(f"lost connection with {self.peer} while sending message body",
                          "4.4.2") from None

    def close(self) -> None:
        self.writer.close()

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.writer.drain(), 5)
        except (TimeoutError, ConnectionError, OSError):
            pass
        self.close()


def data_text(content: bytes, line_length_limit: int = 998) -> bytes:
    """Queued text as Postfix 3.7.11's smtp(8) sends it after DATA (smtp_text_out()): CRLF
    line ends, dot-stuffed (RFC 5321 4.5.2), lines longer than smtp_line_length_limit folded
    into continuation lines that start with a space (a stuffed dot is not counted). A CR that
    is not part of a line end is sent as a space, so no bare CR or LF ever leaves (0035)."""
    text = content.replace(b"\r\n", b"\n")
    if b"\r" in text:
        text = text.replace(b"\r", b" ")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    if line_length_limit > 0 and _long_line(line_length_limit).search(text):
        text = b"".join(_fold(line, line_length_limit) for line in text.split(b"\n")[:-1])
    elif text.startswith(b".") or b"\n." in text:
        text = _STUFF.sub(b"..", text)
    return text.replace(b"\n", b"\r\n")


_STUFF = re.compile(rb"(?m)^\.")


@functools.cache
def _long_line(limit: int) -> re.Pattern[bytes]:
    return re.compile(rb"[^\n]{%d}" % (limit + 1))


def _fold(line: bytes, limit: int) -> bytes:
    """One line, dot-stuffed and cut every `limit` octets; each piece ends in LF."""
    pieces = [(b"." if line.startswith(b".") else b"") + line[:limit]]
    rest = line[limit:]
    while rest:
        pieces.append(b" " + rest[: limit - 1])
        rest = rest[limit - 1 :]
    return b"\n".join(pieces) + b"\n"


def said(conn: Connection, reply: Reply, command: str, next_host: bool = False) -> Failure:
    """`host X[A] said: 550 … (in reply to RCPT TO command)`; 5xx is final."""
    return Failure(f"host {conn.peer} said: {reply.text} (in reply to {command} command)",
                   reply.dsn, final=reply.code // 100 == 5, next_host=next_host)


async def open_connection(host: str, addr: str, port: int, path: str, lmtp: bool,
                          timeouts: Timeouts) -> Connection:
    """Connect and read the greeting (`host[addr]:port`, or a UNIX socket `path`)."""
    where = path if path else f"{host}[{addr}]:{port}"
    try:
        opening = asyncio.open_unix_connection(path) if path else asyncio.open_connection(addr, port)
        reader, writer = await asyncio.wait_for(opening, timeouts.connect)
    except TimeoutError:
        raise Failure(f"connect to {where}: Connection timed out", "4.4.1") from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise Failure(f"connect to {where}: {reason}", "4.4.1") from None
    conn = Connection(reader, writer, host, where, lmtp, timeouts)
    try:
        greeting = await conn.reply(timeouts.helo, "receiving the initial server greeting")
    except Failure:
        conn.close()
        raise
    if greeting.code != 220:
        conn.close()
        raise Failure(f"host {conn.peer} refused to talk to me: {greeting.text}",
                      greeting.dsn, final=False, next_host=True)
    return conn


def tls_context() -> ssl.SSLContext:
    """Opportunistic TLS (`smtp_tls_security_level = may`): encrypt, do not verify."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
