"""Play scripted SMTP dialogues over a real socket and record the server's replies.

Script lines (`*.in`): `C text` sends text+CRLF and reads one reply; `N text` sends text+CRLF
and reads nothing; `R text` sends raw text (no CRLF added) and reads one reply; `W` reads one
more reply without sending; `E expr` sends the Python string expression's value+CRLF and reads
one reply; `#! name = value` sets a main.cf parameter for both servers. In `text`, backslash
escapes (\\r, \\n, \\t, \\xNN) are decoded. `---` starts a new session, `#` is a comment.
Transcripts (`*.ref`) hold `S: ` reply lines and `C: ` echo lines; `<CLOSED>` marks a close.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path


def _decode(text: str) -> bytes:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


def script_settings(text: str) -> dict[str, str]:
    """`#! name = value` lines: main.cf settings the script needs (both servers get them)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#! "):
            name, _, value = line[3:].partition("=")
            out[name.strip()] = value.strip()
    return out


def parse_script(text: str) -> list[list[tuple[str, bytes, bool]]]:
    """Sessions of (label, bytes to send, wait for a reply)."""
    sessions: list[list[tuple[str, bytes, bool]]] = [[]]
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line == "---":
            sessions.append([])
            continue
        kind, _, rest = line.partition(" ")
        if kind == "C":
            sessions[-1].append((rest, _decode(rest) + b"\r\n", True))
        elif kind == "N":
            sessions[-1].append((rest, _decode(rest) + b"\r\n", False))
        elif kind == "R":
            sessions[-1].append((rest, _decode(rest), True))
        elif kind == "W":
            sessions[-1].append(("(wait)", b"", True))
        elif kind == "E":
            value = str(eval(rest, {}))  # test data written by us
            sessions[-1].append((rest, value.encode("latin-1") + b"\r\n", True))
        else:
            raise ValueError(f"bad script line: {line!r}")
    return [s for s in sessions if s]


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> str | None:
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            except TimeoutError:
                return "<TIMEOUT>"
            if not data:
                return None
            self.buf += data
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.rstrip(b"\r").decode("latin-1")

    def reply(self) -> list[str]:
        out: list[str] = []
        while True:
            line = self.line()
            if line is None:
                out.append("<CLOSED>")
                return out
            out.append(line)
            if line == "<TIMEOUT>" or len(line) < 4 or line[3] != "-":
                return out


def play(port: int, session: list[tuple[str, bytes, bool]], timeout: float = 5.0) -> list[str]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    reader = _Reader(sock)
    out = ["S: " + x for x in reader.reply()]
    try:
        for label, data, wait in session:
            out.append("C: " + label)
            try:
                sock.sendall(data)
            except OSError:
                out.append("S: <CLOSED>")
                break
            if not wait:
                continue
            reply = reader.reply()
            out += ["S: " + x for x in reply]
            if reply[-1] == "<CLOSED>":
                break
    finally:
        sock.close()
    return out


def normalize(lines: list[str], hostname: str) -> list[str]:
    out = []
    for line in lines:
        line = re.sub(r"queued as [0-9A-F]{6,}", "queued as QUEUEID", line)
        line = line.replace(hostname, "HOSTNAME")
        out.append(line)
    return out


def record(port: int, script: Path, hostname: str) -> str:
    chunks = []
    for session in parse_script(script.read_text()):
        chunks.append("\n".join(normalize(play(port, session), hostname)))
    return "\n======\n".join(chunks) + "\n"
