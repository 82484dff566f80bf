"""SMTP smuggling test support: the end-of-data variants and a capture server for raw DATA.

`VARIANTS` are the end-of-data look-alikes of the public SMTP smuggling research (SEC Consult's
smtp-smuggling-tools, Timo Longin 2023, and the variants of the Postfix and Sendmail
advisories): each is sent inside a DATA body, followed by a smuggled MAIL/RCPT/DATA, so a
receiver that takes the variant as the end of data executes the smuggled commands.

`CaptureServer` is a threaded SMTP receiver on 127.0.0.1 that keeps the raw bytes of every DATA
exactly as the client sent them (up to and excluding the final <CR><LF>.<CR><LF>, no
unstuffing). Run it alone: python -m support.smuggling [--port N] prints each message's repr.
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
from dataclasses import dataclass

from support.loopback import LoopbackServer

# name -> the bytes put between two lines of the body
VARIANTS: dict[str, bytes] = {
    "lf.lf": b"\n.\n",
    "cr.cr": b"\r.\r",
    "cr.lf": b"\r.\n",
    "lf.cr": b"\n.\r",
    "lf.crlf": b"\n.\r\n",
    "crlf.lf": b"\r\n.\n",
    "cr.crlf": b"\r.\r\n",
    "crlf.cr": b"\r\n.\r",
    "crlf-nul.crlf": b"\r\n\x00.\r\n",
    "crlf.crcrlf": b"\r\n.\r\r\n",
    "crlf.nul-crlf": b"\r\n.\x00\r\n",
    "crcrlf.crcrlf": b"\r\r\n.\r\r\n",
    "lflf.lflf": b"\n\n.\n\n",
    "crlf.space-crlf": b"\r\n. \r\n",
    "crlf.tab-crlf": b"\r\n.\t\r\n",
    "crcr.crcr": b"\r\r.\r\r",
    "lfcr.lfcr": b"\n\r.\n\r",
    "crlf.lfcr": b"\r\n.\n\r",
    "lf.lfcr": b"\n.\n\r",
    "crlfcr.crlf": b"\r\n\r.\r\n",
    "crlf-dotdot.crlf": b"\r\n..\r\n",
    "crlf-esc.crlf": b"\r\n\x1b.\r\n",
}

SMUGGLED_SENDER = "smuggler@evil.example"

# Message bodies for the relay client (besides the smuggling variants): what Postfix's smtp(8)
# sends for them is recorded in tests/data/smuggling/outbound.json.
OUTBOUND_BODIES: dict[str, bytes] = {
    "bare-cr": b"a\rb\r\nc\r",
    "bare-lf": b"a\nb\n",
    "cr-dot-cr": b"x\r.\ry",
    "cr-dot-lf": b"x\r.\ny",
    "cr-runs": b"1\r2\n3\r\n4\r\r5\n\n6\r\r\r\n7",
    "cr-at-line-start": b"a\n\rb\n\r.\n\rc",
    "nul": b"a\x00b\r\n\x00\r\n.\x00\r\n",
    "dots": b".a\r\n..b\r\n. \r\n..\r\n...\r\n",
    "line-998": b"A" * 998,
    "line-999": b"B" * 999,
    "line-2000": b"C" * 2000,
    "line-5000-words": b"word " * 1000,
    "line-dot-998": b".." + b"D" * 997 + b"\r\n.." + b"E" * 998,
    "line-cr-in-long": b"F" * 990 + b"\r" + b"G" * 20,
    "line-dot-after-split": b"H" * 998 + b".I",
}


def outbound_message(name: str, body: bytes) -> bytes:
    """A complete message (all the headers an MTA would add for a local client present, so
    only Received: is prepended), `body` as given; ends in <CR><LF> before the final dot."""
    head = (f"From: <sender@remote.example>\r\nTo: <{name}@remote.example>\r\n"
            "Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
            f"Message-ID: <{name}@remote.example>\r\nSubject: {name}\r\n"
            "X-Note: head\rer with a bare CR\r\n\r\n").encode()
    return head + body + b"\r\n"


def relayed_part(raw: bytes) -> bytes:
    """The part of a relayed message that came from the client: from its From: header on
    (drops the Received: header each MTA prepends)."""
    start = raw.find(b"From: <sender@remote.example>")
    return raw[start:] if start >= 0 else raw


def send_raw(port: int, sender: str, rcpt: str, message: bytes, timeout: float = 10.0) -> str:
    """EHLO, MAIL, RCPT, DATA, then `message` and the final dot as raw bytes; the reply."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
        client.ehlo("client.example")
        client.mail(sender)
        code, text = client.rcpt(rcpt)
        if code != 250:
            return f"{code} {text.decode()}"
        code, text = client.docmd("DATA")
        if code != 354:
            return f"{code} {text}"
        assert client.sock is not None
        client.sock.sendall(message + b".\r\n")
        code, text = client.getreply()
        return f"{code} {text.decode('latin-1')}"


def smuggling_body(variant: bytes, rcpt: str, marker: str) -> bytes:
    """A DATA body (ending in <CR><LF>, without the final dot) that carries `variant` and, after
    it, a complete second transaction to `rcpt`: MAIL, RCPT, DATA and a message whose
    Subject is `marker`-smuggled. A receiver that executes it delivers two messages."""
    smuggled = (f"MAIL FROM:<{SMUGGLED_SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
                f"From: <{SMUGGLED_SENDER}>\r\nSubject: {marker}-smuggled\r\n\r\n"
                "smuggled text\r\n").encode()
    return (f"From: <sender@remote.example>\r\nSubject: {marker}\r\n"
            "Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
            "Message-ID: <" f"{marker}@remote.example>\r\n\r\nfirst line").encode() \
        + variant + smuggled


def play(port: int, variant: bytes, marker: str, rcpt: str = "alice@example.test",
         smuggled_rcpt: str = "bob@example.test", timeout: float = 10.0) -> list[str]:
    """One smuggling attempt: EHLO, MAIL, RCPT, DATA, then the body with `variant`, the real
    end of data and QUIT in one write (as an attacker pipelines them). Returns the reply lines
    after 354, up to the server's close; `<CLOSED>` ends the list if the server closed the
    connection before QUIT was answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = sock.makefile("rb")

        def reply() -> list[str]:
            lines = []
            while True:
                line = reader.readline()
                if not line:
                    return [*lines, "<CLOSED>"]
                lines.append(line.decode("latin-1").rstrip("\r\n"))
                if line[3:4] != b"-":
                    return lines

        reply()
        for command in ("EHLO client.example", "MAIL FROM:<sender@remote.example>",
                        f"RCPT TO:<{rcpt}>", "DATA"):
            sock.sendall(command.encode() + b"\r\n")
            answer = reply()
            if not answer[-1].startswith(("2", "3")):
                return [f"{command}: {answer[-1]}"]
        try:
            sock.sendall(smuggling_body(variant, smuggled_rcpt, marker) + b".\r\nQUIT\r\n")
        except OSError:
            pass
        out: list[str] = []
        while not out or out[-1] != "<CLOSED>":
            try:
                out += reply()
            except OSError:
                out.append("<CLOSED>")
        if any(line.startswith("221 ") for line in out):
            out.remove("<CLOSED>")
        return out


def normalize_reply(line: str) -> str:
    """A reply line with the queue id and the host name replaced (for comparisons)."""
    line = re.sub(r"queued as [0-9A-Za-z]+", "queued as QUEUEID", line)
    return re.sub(r"\b[\w.-]+\.test\b", "HOSTNAME", line)


# Sequences a receiver may take as the end of data (a lone dot between two line ends of any
# kind) — none of them may leave a relay except the real <CR><LF>.<CR><LF> at the end.
_DOT_LINE = re.compile(rb"(?:^|[\r\n])\.(?:[\r\n]|\x00)")
_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_UNSTUFFED = re.compile(rb"(?:^|\r\n)\.(?!\.)")  # a sent line that starts with one dot


def end_of_data_lookalikes(data: bytes) -> list[str]:
    """Why `data` (raw DATA bytes without the final dot line) is unsafe to send: bare CR,
    bare LF, an unstuffed line that starts with '.', a dot between line ends; [] if safe."""
    problems = []
    if _BARE_CR.search(data):
        problems.append("bare CR")
    if _BARE_LF.search(data):
        problems.append("bare LF")
    if _UNSTUFFED.search(data):
        problems.append("unstuffed leading dot")
    if _DOT_LINE.search(data):
        problems.append("dot line")
    return problems


@dataclass
class Captured:
    """One DATA as received: envelope and the raw bytes (no unstuffing, no final dot line)."""

    sender: str
    recipients: list[str]
    raw: bytes


class CaptureServer(LoopbackServer):
    """A threaded SMTP receiver on 127.0.0.1 that records raw DATA bytes (see the module)."""

    def __init__(self, port: int = 0, hostname: str = "capture.test") -> None:
        self.messages: list[Captured] = []
        self.hostname = hostname
        self.arrived = threading.Condition()
        super().__init__(port)

    def wait(self, count: int, timeout: float = 20.0) -> list[Captured]:
        """Block until `count` messages have arrived; returns them all."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"{len(self.messages)} of {count} messages captured")
            return list(self.messages)

    def session(self, conn: socket.socket) -> None:
        buf = bytearray()
        sender, rcpts = "", []

        def line() -> bytes | None:
            while b"\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return None
                buf.extend(data)
            end = buf.index(b"\r\n")
            out = bytes(buf[:end])
            del buf[: end + 2]
            return out

        try:
            conn.sendall(f"220 {self.hostname} ESMTP capture\r\n".encode())
            while (cmd := line()) is not None:
                verb = cmd[:4].upper()
                if verb in (b"EHLO", b"LHLO"):
                    conn.sendall(f"250-{self.hostname}\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 "250 SIZE 0\r\n".encode())
                elif verb == b"MAIL":
                    sender, rcpts = cmd.decode("latin-1"), []
                    conn.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    rcpts.append(cmd.decode("latin-1"))
                    conn.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    raw = self._data(conn, buf)
                    if raw is None:
                        return
                    with self.arrived:
                        self.messages.append(Captured(sender, rcpts, raw))
                        self.arrived.notify_all()
                    conn.sendall(b"250 2.0.0 Ok: captured\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            return
        finally:
            conn.close()

    @staticmethod
    def _data(conn: socket.socket, buf: bytearray) -> bytes | None:
        """Raw bytes up to the strict <CR><LF>.<CR><LF> (its first <CR><LF> is not kept...
        except as the last line's end: the text is returned ending in <CR><LF>)."""
        buf[:0] = b"\r\n"
        while (end := buf.find(b"\r\n.\r\n")) < 0:
            data = conn.recv(65536)
            if not data:
                return None
            buf.extend(data)
        raw = bytes(buf[2 : end + 2])
        del buf[: end + 5]
        return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    args = parser.parse_args()
    server = CaptureServer(args.port)
    print(f"capture: listening on 127.0.0.1:{server.port}", flush=True)
    seen = 0
    try:
        while True:
            messages = server.wait(seen + 1, timeout=3600)
            for msg in messages[seen:]:
                print(msg.sender, msg.recipients, repr(msg.raw), flush=True)
            seen = len(messages)
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
