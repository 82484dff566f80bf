"""A durable SMTP sink for tests and scripts: every message is appended to a record file and
fsync'd before `250`, so what it acknowledged survives a crash of anything but the disk.

Each accepted message is one JSON line: {"from", "rcpt": [...], "message_id", "tokens": [...],
"size", "conn", "time"}; `tokens` are the matches of `--token` (a regex with one group, searched per
line of the message; default: the value of `X-Token:` headers). Speaks just enough SMTP for
an MTA's client: EHLO/HELO, MAIL, RCPT, DATA (dot-unstuffing), RSET, NOOP, QUIT; commands may
be pipelined. `--fail-every N` answers every Nth DATA with 451 (not recorded).
Run: python -m support.sink --record FILE [--port N]; prints "sink: listening on 127.0.0.1:PORT".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKEN = r"^X-Token:\s*(\S+)"
_MESSAGE_ID = re.compile(rb"^Message-I[Dd]:\s*(\S+)", re.IGNORECASE)


@dataclass
class _Transaction:
    sender: str | None = None
    rcpt: list[str] = field(default_factory=list)


def _address(arg: str) -> str:
    """The address inside `FROM:<a>` / `TO:<a>` (parameters after it dropped)."""
    value = arg.split(":", 1)[1].strip() if ":" in arg else ""
    if value.startswith("<"):
        return value[1 : value.find(">")] if ">" in value else value[1:]
    return value.split(" ", 1)[0]


class DurableSink:
    """An asyncio SMTP server on 127.0.0.1 that records messages durably (see the module)."""

    def __init__(self, record: str, token: str = DEFAULT_TOKEN, fail_every: int = 0,
                 hostname: str = "sink.test") -> None:
        self.fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.token = re.compile(token.encode(), re.IGNORECASE)
        self.fail_every = fail_every
        self.hostname = hostname
        self.connections = 0
        self.messages = 0
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        os.close(self.fd)

    def _store(self, txn: _Transaction, lines: list[bytes], conn: int) -> None:
        """Append the message's record and fsync it (the durability promise of `250`)."""
        message_id, tokens = "", []
        in_header = True
        for line in lines:
            if in_header and not line.strip():
                in_header = False
            if in_header and not message_id:
                m = _MESSAGE_ID.match(line)
                if m:
                    message_id = m.group(1).decode("utf-8", "replace")
            t = self.token.search(line)
            if t:
                tokens.append(t.group(1).decode("utf-8", "replace"))
        entry = {"from": txn.sender, "rcpt": txn.rcpt, "message_id": message_id,
                 "tokens": tokens, "size": sum(len(x) for x in lines), "conn": conn,
                 "time": round(time.time(), 6)}
        os.write(self.fd, json.dumps(entry).encode() + b"\n")
        os.fsync(self.fd)

    async def _data(self, reader: asyncio.StreamReader) -> list[bytes] | None:
        """Message lines up to the lone dot, unstuffed; None if the client went away."""
        lines: list[bytes] = []
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                return None
            if line in (b".\r\n", b".\n"):
                return lines
            lines.append(line[1:] if line.startswith(b".") else line)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        txn = _Transaction()
        try:
            writer.write(f"220 {self.hostname} ESMTP durable sink\r\n".encode())
            while True:
                line = await reader.readline()
                if not line:
                    return
                reply = await self._command(line.decode("utf-8", "replace").strip(), txn,
                                            reader, writer, conn)
                if reply is None:
                    return
                writer.write(reply.encode() + b"\r\n")
                if reply.startswith("221"):
                    await writer.drain()
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _command(self, text: str, txn: _Transaction, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, conn: int) -> str | None:
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            return f"250-{self.hostname}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0"
        if verb in ("HELO", "LHLO"):
            return f"250 {self.hostname}"
        if verb == "MAIL":
            txn.sender, txn.rcpt = _address(arg), []
            return "250 2.1.0 Ok"
        if verb == "RCPT":
            if txn.sender is None:
                return "503 5.5.1 Error: need MAIL command"
            txn.rcpt.append(_address(arg))
            return "250 2.1.5 Ok"
        if verb == "DATA":
            if not txn.rcpt:
                return "554 5.5.1 Error: no valid recipients"
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            return await self._message(txn, reader, conn)
        if verb in ("RSET", "NOOP"):
            if verb == "RSET":
                txn.sender, txn.rcpt = None, []
            return "250 2.0.0 Ok"
        if verb == "QUIT":
            return "221 2.0.0 Bye"
        return "502 5.5.2 Error: command not recognized"

    async def _message(self, txn: _Transaction, reader: asyncio.StreamReader,
                       conn: int) -> str | None:
        lines = await self._data(reader)
        if lines is None:
            return None
        self.messages += 1
        sender, rcpt = txn.sender, txn.rcpt
        txn.sender, txn.rcpt = None, []
        if self.fail_every and self.messages % self.fail_every == 0:
            return "451 4.3.0 Error: sink says try again"
        self._store(_Transaction(sender, rcpt), lines, conn)
        return "250 2.0.0 Ok: recorded"


def read_records(path: str) -> list[dict[str, Any]]:
    """The sink's record file as a list of entries (a torn last line is ignored)."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


async def _main(args: argparse.Namespace) -> None:
    sink = DurableSink(args.record, args.token, args.fail_every)
    port = await sink.start(args.port)
    print(f"sink: listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--record", required=True, help="file the messages are appended to")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--token", default=DEFAULT_TOKEN,
                        help="regex with one group: the unique id in a message line")
    parser.add_argument("--fail-every", type=int, default=0, help="451 every Nth DATA")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
