"""Varied SMTP sessions for the replay ground truth, played the way `mailgate replay` models a
client: it sends what it sent then whatever the answers, and each recipient gets the first
refusal on its way (the greeting after XCLIENT, MAIL, its RCPT, DATA, the end of the
message) or 250.

Each session sets its client with XCLIENT (ADDR, NAME, REVERSE_NAME) and tags it with
`PORT=`, which the journal keeps and `mailgate replay --json` shows as `client_port`.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BASE_PORT = 20000
CLIENTS = [("127.0.0.2", "listed.mailgate.test"), ("127.0.0.20", "twenty.example.org"),
           ("127.0.0.10", "good.mailgate.test"), ("192.0.2.5", "mx.spam.example"),
           ("192.0.2.77", "[UNAVAILABLE]"), ("198.51.100.9", "mail.example.org"),
           ("198.51.100.23", "[TEMPUNAVAIL]"), ("203.0.113.40", "relay.example.net"),
           ("203.0.113.41", "[UNAVAILABLE] REVERSE_NAME=forged.example.net")]
HELOS = ["mail.example.org", "mail.example.org", "good.mailgate.test", "good.mailgate.test",
         "localhost", "bad_helo!name", "[192.0.2.1]", "listed.mailgate.test",
         "x.nxdomain.mailgate.test"]
SENDER_DOMAINS = ["mailgate.test", "mailgate.test", "good.mailgate.test", "nxdomain.mailgate.test",
                  "nullmx.mailgate.test", "spam.example.org", "porcupine.org", "bogus",
                  "listed.mailgate.test"]
RECIPIENTS = ["alice@example.test", "bob@example.test", "postmaster@example.test",
              "nobody@example.test", "x@other.example", "alice"]


@dataclass(frozen=True)
class Script:
    """One session: its tag, client, HELO, envelope, whether it sends a message, and
    whether MAIL and RCPT go in one pipelined group."""

    tag: int
    addr: str
    name: str
    verb: str
    helo: str
    sender: str
    recipients: tuple[str, ...]
    data: bool
    pipelined: bool
    persistent: bool = False  # goes on after a refused greeting (as spam bots do)

    @property
    def port(self) -> int:
        return BASE_PORT + self.tag


def scripts(seed: int, count: int, null_sender: bool = True) -> list[Script]:
    rng = random.Random(seed)
    out = []
    for tag in range(count):
        addr, name = rng.choice(CLIENTS)
        domain = rng.choice(SENDER_DOMAINS)
        sender = "" if null_sender and rng.random() < 0.08 else f"s{tag}@{domain}"
        recipients = tuple(rng.sample(RECIPIENTS, rng.randint(1, 3)))
        out.append(Script(tag, addr, name, rng.choice(["EHLO", "EHLO", "HELO"]),
                          rng.choice(HELOS), sender, recipients, rng.random() < 0.6,
                          rng.random() < 0.4))
    return out


class _Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.file = self.sock.makefile("rb")

    def reply(self) -> int:
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("connection closed")
            if line[3:4] != b"-":
                return int(line[:3])

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def play(port: int, s: Script) -> list[int]:
    """The code each recipient of the session gets (see the module's docstring)."""
    conn = _Conn(port)
    try:
        assert conn.reply() == 220
        conn.send(f"XCLIENT ADDR={s.addr} NAME={s.name} PORT={s.port}")
        greeting = conn.reply()
        if greeting != 220:
            if s.persistent:  # every command is answered 503 5.7.0 access denied
                for line in (f"{s.verb} {s.helo}", f"MAIL FROM:<{s.sender}>",
                             *(f"RCPT TO:<{r}>" for r in s.recipients)):
                    conn.send(line)
                    conn.reply()  # (503 5.7.0 access denied)
            conn.send("QUIT")
            return [greeting] * len(s.recipients)
        conn.send(f"{s.verb} {s.helo}")
        conn.reply()  # a refused HELO does not stop this client
        commands = [f"MAIL FROM:<{s.sender}>", *(f"RCPT TO:<{r}>" for r in s.recipients)]
        if s.pipelined:
            conn.send(*commands)
            codes = [conn.reply() for _ in commands]
        else:
            codes = []
            for command in commands:
                conn.send(command)
                codes.append(conn.reply())
        mail, rcpts = codes[0], codes[1:]
        if mail >= 400:
            conn.send("QUIT")
            return [mail] * len(rcpts)
        accepted = [i for i, code in enumerate(rcpts) if code < 400]
        if s.data and accepted:
            conn.send("DATA")
            code = conn.reply()
            if code == 354:
                conn.send("Subject: replay", "", f"session {s.tag}", ".")
                code = conn.reply()
            for i in accepted:
                rcpts[i] = code
        conn.send("QUIT")
        return rcpts
    finally:
        conn.close()


def play_all(port: int, sessions: Iterable[Script]) -> dict[int, list[int]]:
    """Each session's codes by its tag, played 16 at a time."""
    items = list(sessions)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda s: play(port, s), items))
    return {s.tag: codes for s, codes in zip(items, results, strict=True)}


def replay(config: Path, inputs: list[Path], *options: str) -> list[dict[str, object]]:
    """`mailgate replay -c CONFIG --json OPTIONS INPUTS`, its lines as objects."""
    done = subprocess.run([sys.executable, "-m", "mailgate.cli", "replay", "-c", str(config),
                           "--json", *options, *map(str, inputs)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def by_tag(rows: list[dict[str, object]]) -> dict[int, list[dict[str, object]]]:
    """The rows of each session (by the PORT tag), in recipient order."""
    out: dict[int, list[dict[str, object]]] = {}
    for row in rows:
        port = row["client_port"]
        assert isinstance(port, int)
        out.setdefault(port - BASE_PORT, []).append(row)
    return out


def compare(predicted: dict[int, list[dict[str, object]]], live: dict[int, list[int]]
            ) -> tuple[int, int, list[str]]:
    """(evaluated, not evaluated, mismatches) of the predictions against the live codes."""
    evaluated = unknown = 0
    wrong = []
    for tag, codes in live.items():
        rows = predicted.get(tag, [])
        assert len(rows) == len(codes), (tag, rows, codes)
        for row, code in zip(rows, codes, strict=True):
            if not row["evaluated"]:
                unknown += 1
                assert row["now"] is None and row["reason"]
                continue
            evaluated += 1
            if row["now"] != code:
                wrong.append(f"session {tag}: predicted {row['now']} ({row['rule']}), "
                             f"live {code}: {row}")
    if os.environ.get("MAILGATE_SHOW"):
        rows = [row for rows in predicted.values() for row in rows]
        print(evaluated, unknown, len(wrong), Counter(
            (r["then"], r["now"], r["rule"], r["stage"]) for r in rows).most_common(),
            Counter(r["reason"] for r in rows))
    return evaluated, unknown, wrong
