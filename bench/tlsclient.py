"""A STARTTLS load generator for bench/throughput.py --tls (smtp-source cannot start TLS).

Each session: greeting, EHLO, STARTTLS, a full TLS handshake (no session reuse: every session
pays for its key exchange, as a new sender does), EHLO again, one message of `size` bytes to
one recipient, QUIT. `sessions` run concurrently until `messages` are sent; a reply other than
the expected one stops the run with the dialogue's line. Run from throughput.py or alone:

    python bench/tlsclient.py PORT -m 2000 -s 10 -l 2048 -t bench@example.test
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time


class Failed(Exception):
    pass


async def _reply(reader: asyncio.StreamReader, code: bytes, what: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise Failed(f"{what}: connection closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise Failed(f"{what}: {line.decode(errors='replace').strip()}")
            return


async def session(port: int, ctx: ssl.SSLContext, sender: str, rcpt: str,
                  body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader, b"220", "greeting")
        writer.write(b"EHLO bench.client.test\r\n")
        await _reply(reader, b"250", "EHLO")
        writer.write(b"STARTTLS\r\n")
        await _reply(reader, b"220", "STARTTLS")
        await writer.start_tls(ctx)
        writer.write(b"EHLO bench.client.test\r\n")
        await _reply(reader, b"250", "EHLO after TLS")
        writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        await _reply(reader, b"250", "MAIL")
        await _reply(reader, b"250", "RCPT")
        await _reply(reader, b"354", "DATA")
        writer.write(body + b".\r\n")
        await _reply(reader, b"250", "end of data")
        writer.write(b"QUIT\r\n")
        await _reply(reader, b"221", "QUIT")
    finally:
        writer.close()


def message(size: int) -> bytes:
    head = b"From: <bench@remote.example>\r\nSubject: tls bench\r\n\r\n"
    line = b"x" * 70 + b"\r\n"
    body = head + line * max(1, (size - len(head)) // len(line))
    return body


async def run(port: int, messages: int, sessions: int, size: int, sender: str,
              rcpt: str) -> float:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = message(size)
    left = messages

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await session(port, ctx, sender, rcpt, body)

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("-m", "--messages", type=int, default=1000)
    parser.add_argument("-s", "--sessions", type=int, default=10)
    parser.add_argument("-l", "--size", type=int, default=2048)
    parser.add_argument("-f", "--sender", default="bench@remote.example")
    parser.add_argument("-t", "--to", default="bench@example.test")
    args = parser.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        elapsed = runner(run(args.port, args.messages, args.sessions, args.size, args.sender,
                             args.to))
    except Failed as exc:
        print(f"tlsclient: {exc}", file=sys.stderr)
        return 1
    print(f"tlsclient: {args.messages} messages over STARTTLS in {elapsed:.2f} s "
          f"({args.messages / elapsed:.1f} msg/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
