"""The recorded Postfix 3.7.11 sessions in shared/postfix/tests/observed-3.7.11/, as tests.

Each `### ID title` block has `#   name = value` overrides of main.cf.baseline, one or more
sessions (`--- session N`) of `C:` lines sent and `S:` replies received (multi-line replies
shown by their last line, `[N.Ns]` the observed delay), and the smtpd log lines.
Consecutive `C:` lines are sent in one write (pipelined), then as many replies are read as
`S:` lines follow.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

_CLOSED = ("<EOF>", "<ConnectionResetError>", "<OSError>", "<TimeoutError>")


@dataclass
class Step:
    send: list[str]
    expect: list[str]  # reply lines (last line of each reply); "<CLOSED>" for a close


@dataclass
class ObservedTest:
    ident: str
    title: str
    settings: dict[str, str] = field(default_factory=dict)
    sessions: list[list[Step]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def baseline(directory: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (directory / "main.cf.baseline").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def parse(path: Path) -> list[ObservedTest]:
    tests: list[ObservedTest] = []
    test: ObservedTest | None = None
    in_log = False
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            ident, _, title = line[4:].partition(" ")
            test = ObservedTest(ident, title)
            tests.append(test)
            in_log = False
            continue
        if test is None or line.startswith("=====") :
            continue
        if line.startswith("#   "):
            name, _, value = line[4:].partition("=")
            test.settings[name.strip()] = value.strip()
        elif line.startswith("--- log"):
            in_log = True
        elif line.startswith("--- session"):
            test.sessions.append([])
        elif in_log:
            if line.startswith("  "):
                test.log.append(line[2:])
        elif test.sessions and test.sessions[-1] and test.sessions[-1][-1].send \
                and not test.sessions[-1][-1].expect and not line.startswith(("C:", "S:")):
            test.sessions[-1][-1].send.append(line)  # message text after a C: line
        elif line.startswith(("C: ", "S: ")) or line in ("C:", "S:"):
            if not test.sessions:
                test.sessions.append([])
            steps = test.sessions[-1]
            kind, text = line[0], line[3:]
            if kind == "S":
                text = re.sub(r"\s+\[\d+\.\ds\]$", "", text)
                text = "<CLOSED>" if text in _CLOSED else text
                if not steps:
                    steps.append(Step([], []))
                steps[-1].expect.append(text)
            else:
                if not steps or steps[-1].expect:
                    steps.append(Step([], []))
                steps[-1].send.append(text)
    return tests


def _last_lines(sock: socket.socket, buf: bytearray, count: int) -> list[str]:
    """Read `count` replies; each is represented by its last line ("<CLOSED>" if none)."""
    out: list[str] = []
    while len(out) < count:
        if b"\n" not in buf:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                out.append("<CLOSED>")
                return out
            buf += data
            continue
        raw, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        line = raw.rstrip(b"\r").decode("latin-1")
        if len(line) >= 4 and line[3] == "-":
            continue
        out.append(line)
    return out


def play(port: int, steps: list[Step], timeout: float = 15.0) -> list[str]:
    """Play one session; the replies in the transcript's form."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf = bytearray()
    got: list[str] = []
    try:
        for step in steps:
            if step.send:
                try:
                    sock.sendall("".join(x + "\r\n" for x in step.send).encode("latin-1"))
                except OSError:  # closed: as expected only if a reply was awaited
                    if step.expect:
                        got.append("<CLOSED>")
                    break
            got += _last_lines(sock, buf, len(step.expect))
            if got and got[-1] == "<CLOSED>":
                break
    finally:
        sock.close()
    return got


def expected(steps: list[Step]) -> list[str]:
    out: list[str] = []
    for step in steps:
        out += step.expect
        if out and out[-1] == "<CLOSED>":
            break
    return out
