"""Floods: idle connections, slow clients, a huge line, a recipient flood, a huge message and
header floods against mailgate; memory (RSS of the server's processes) and the latency of a
normal transaction during each flood. 127.0.0.1 only; every process started is stopped by PID.

Scenarios (default: all):
  idle       N idle connections (default 10,000): KiB per idle session; with the reference
             Postfix (one smtpd process per session) the same for 200 sessions
  slowloris  200 clients trickling one byte every 2 s, cut by smtpd_timeout (a 10 s
             per-request deadline) or smtpd_session_deadline (20 s, per-read timeout)
  line       a 10 MB line without a newline (line_length_limit cuts it)
  rcpts      100,000 RCPTs in one session (smtpd_recipient_limit = 1000, error limits
             raised so every one is answered; the default limits end it at 2,020)
  message    a 1 GB message against message_size_limit (552 at the end of DATA)
  headers    100,000 header lines, and one 9 MB header line
Usage: bench/floods [SCENARIO ...] [--idle N] [--slow N] [--gb G] [--no-postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import REFERENCE, descendants, main_cf, proc_rss_kb, serve  # noqa: E402

BASE = {"smtpd_max_connections": "30000", "smtpd_client_connection_count_limit": "0",
        "myhostname": "mx.bench.test"}
PORT_POSTFIX = int(os.environ.get("FLOODS_POSTFIX_PORT", "27500"))


class Mailgate:
    """`mailgate serve` with the bench configuration plus `settings`, stopped by its PID."""

    def __init__(self, work: Path, settings: dict[str, str]) -> None:
        self.work = work
        etc = main_cf(work, {**BASE, **settings})
        self.proc, self.port = serve(etc)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss(self) -> int:
        """KiB RSS of the smtpd workers (the master also runs the queue manager and the
        deliveries of the latency probes, whose memory has nothing to do with the flood)."""
        return sum(proc_rss_kb(p) for p in descendants(self.proc.pid))

    def log(self, text: str) -> int:
        path = self.work / "maillog"
        return path.read_text(errors="replace").count(text) if path.exists() else 0


# --- clients -----------------------------------------------------------------------------
def transaction(port: int) -> float:
    """One normal transaction (EHLO, MAIL, RCPT, DATA, QUIT) with smtplib; seconds."""
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.sendmail("probe@remote.example", ["bench@example.test"],
                      b"Subject: probe\r\n\r\nlatency probe\r\n")
    return time.monotonic() - started


async def latency(port: int, count: int, while_running: asyncio.Task[object] | None = None
                  ) -> float:
    """Median seconds of `count` transactions (or as many as fit while the task runs)."""
    samples: list[float] = []
    while len(samples) < count and (while_running is None or not while_running.done()):
        samples.append(await asyncio.to_thread(transaction, port))
    return statistics.median(samples) if samples else float("nan")


async def reply(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    return line.rstrip()


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections that read their greeting and then say nothing."""
    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reply(reader)).startswith(b"220 ")
        return writer
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 500):  # in steps, not to overrun the listen backlog
        writers += await asyncio.gather(*(one() for _ in range(min(500, count - start))))
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def envelope(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for line in (None, b"EHLO flood.example", b"MAIL FROM:<flood@remote.example>",
                 b"RCPT TO:<bench@example.test>"):
        if line:
            writer.write(line + b"\r\n")
        await reply(reader)
    return reader, writer


# --- scenarios ---------------------------------------------------------------------------
async def idle(args: argparse.Namespace, work: Path) -> list[str]:
    mg = Mailgate(work / "idle", {})
    try:
        await latency(mg.port, 3)  # warm up
        base, before = await latency(mg.port, 20), mg.rss()
        writers = await open_idle(mg.port, args.idle)
        await asyncio.sleep(1)  # let the servers settle before sampling
        after = mg.rss()
        during = await latency(mg.port, 20)
        await close_all(writers)
    finally:
        mg.stop()
    per = (after - before) / args.idle
    out = [f"idle: mailgate {args.idle} sessions: RSS {before} -> {after} KiB, "
           f"{per:.1f} KiB per idle session; latency {base * 1000:.1f} -> "
           f"{during * 1000:.1f} ms (x{during / base:.2f})"]
    if not args.no_postfix and REFERENCE.exists():
        out.append(await postfix_idle(work / "pf", 200, per))
    return out


def smtpd_pids(spool: Path) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (Path(f"/proc/{pid}/comm").read_text().strip() == "smtpd"
                    and os.readlink(f"/proc/{pid}/cwd").startswith(str(spool.resolve()))):
                out.append(int(pid))
        except OSError:
            continue
    return out


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


async def postfix_idle(directory: Path, count: int, mailgate_per: float) -> str:
    subprocess.run([str(REFERENCE), "start", "--dir", str(directory), "--port",
                    str(PORT_POSTFIX), "--discard", "-o", "default_process_limit=400",
                    "-o", "smtpd_client_connection_count_limit=0"],
                   check=True, timeout=120, stdout=subprocess.DEVNULL)
    try:
        writers = await open_idle(PORT_POSTFIX, count)
        await asyncio.sleep(1)
        pids = smtpd_pids(directory / "spool")
        rss = sum(proc_rss_kb(p) for p in pids) / len(pids)
        pss = sum(pss_kb(p) for p in pids) / len(pids)
        await close_all(writers)
    finally:
        subprocess.run([str(REFERENCE), "stop", "--dir", str(directory)], timeout=60,
                       stdout=subprocess.DEVNULL)
    return (f"idle: Postfix {count} sessions ({len(pids)} smtpd processes): {rss:.0f} KiB RSS, "
            f"{pss:.0f} KiB PSS per session; mailgate/Postfix (PSS) = "
            f"1/{pss / mailgate_per:.0f}")


async def _trickle(port: int, pace: float) -> tuple[float, bytes]:
    """One byte every `pace` s of an endless command line; (seconds until cut, last reply)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    started = time.monotonic()
    read = asyncio.create_task(reply(reader))
    while not read.done():
        try:
            writer.write(b"a")
            await writer.drain()
        except OSError:
            break
        await asyncio.wait([read], timeout=pace)
    answer = await read
    writer.close()
    return time.monotonic() - started, answer


async def slowloris(args: argparse.Namespace, work: Path) -> list[str]:
    out = []
    for label, settings in (
            ("per-request deadline 10 s", {"smtpd_timeout": "10s",
                                           "smtpd_per_request_deadline": "yes"}),
            ("per-read timeout 10 s, session deadline 20 s",
             {"smtpd_timeout": "10s", "smtpd_session_deadline": "20s"})):
        mg = Mailgate(work / f"slow{len(out)}", settings)
        try:
            base = await latency(mg.port, 20)
            flood = asyncio.gather(*(_trickle(mg.port, 2.0) for _ in range(args.slow)))
            task = asyncio.ensure_future(flood)
            await asyncio.sleep(1)
            rss = mg.rss()
            during = await latency(mg.port, 20, task)
            results = await task
        finally:
            mg.stop()
        cut = sorted(t for t, answer in results if answer.startswith(b"421 4.4.2"))
        out.append(f"slowloris ({label}): {len(cut)}/{args.slow} cut with 421 4.4.2 after "
                   f"{cut[0]:.1f}-{cut[-1]:.1f} s; RSS {rss} KiB; latency "
                   f"{base * 1000:.1f} -> {during * 1000:.1f} ms (x{during / base:.2f})")
    return out


async def _measured(mg: Mailgate, name: str, flood: Callable[[], Awaitable[str]]) -> str:
    """Run one flood while sampling RSS and timing normal transactions."""
    await latency(mg.port, 3)
    base, before = await latency(mg.port, 20), mg.rss()
    task = asyncio.ensure_future(flood())
    peak = before
    sampler_done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not sampler_done.is_set():
            peak = max(peak, mg.rss())
            await asyncio.sleep(0.1)
    sampler = asyncio.create_task(sample())
    during = await latency(mg.port, 1000, task)  # type: ignore[arg-type]
    result = await task
    sampler_done.set()
    await sampler
    return (f"{name}: {result}; RSS {before} KiB, peak {peak} KiB (+{peak - before}); latency "
            f"{base * 1000:.1f} -> {during * 1000:.1f} ms (x{during / base:.2f})")


async def line(args: argparse.Namespace, work: Path) -> list[str]:
    async def flood() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", mg.port)
        await reply(reader)
        chunk = b"X" * 65536
        for _ in range(160):  # 10 MiB
            writer.write(chunk)
            await writer.drain()
        writer.write(b"\r\nNOOP\r\n")
        answers = [await reply(reader), await reply(reader)]
        writer.close()
        return "10 MiB line -> " + " / ".join(a.decode() for a in answers)
    mg = Mailgate(work / "line", {})
    try:
        return [await _measured(mg, "line", flood)]
    finally:
        mg.stop()


async def rcpts(args: argparse.Namespace, work: Path) -> list[str]:
    count = 100_000

    async def flood() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", mg.port)
        for text in (None, b"EHLO flood.example", b"MAIL FROM:<flood@remote.example>"):
            if text:
                writer.write(text + b"\r\n")
            await reply(reader)
        codes: dict[bytes, int] = {}

        async def send() -> None:
            for start in range(0, count, 1000):
                writer.write(b"RCPT TO:<bench@example.test>\r\n" * min(1000, count - start))
                await writer.drain()
        sender = asyncio.create_task(send())
        for _ in range(count):
            answer = await reply(reader)
            codes[answer] = codes.get(answer, 0) + 1
        await sender
        writer.close()
        return f"{count} RCPTs -> " + ", ".join(f"{n} x {a.decode()}" for a, n in codes.items())
    mg = Mailgate(work / "rcpts", {"smtpd_hard_error_limit": "1000000",
                                   "smtpd_soft_error_limit": "1000000"})
    try:
        return [await _measured(mg, "rcpts", flood)]
    finally:
        mg.stop()


async def message(args: argparse.Namespace, work: Path) -> list[str]:
    size = int(args.gb * 1024**3)

    async def flood() -> str:
        reader, writer = await envelope(mg.port)
        writer.write(b"DATA\r\n")
        await reply(reader)
        chunk = (b"y" * 1022 + b"\r\n") * 64
        started = time.monotonic()
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write(b".\r\n")
        answer = await reply(reader)
        writer.close()
        return (f"{size / 1024**3:.1f} GiB message in {time.monotonic() - started:.1f} s -> "
                f"{answer.decode()}")
    mg = Mailgate(work / "message", {})
    try:
        return [await _measured(mg, "message", flood)]
    finally:
        mg.stop()


async def headers(args: argparse.Namespace, work: Path) -> list[str]:
    def flood_of(label: str, head: bytes) -> Callable[[], Awaitable[str]]:
        async def flood() -> str:
            reader, writer = await envelope(mg.port)
            writer.write(b"DATA\r\n")
            await reply(reader)
            for start in range(0, len(head), 1 << 20):
                writer.write(head[start:start + (1 << 20)])
                await writer.drain()
            writer.write(b"\r\nbody\r\n.\r\n")
            answer = await reply(reader)
            writer.close()
            return f"{label} -> {answer.decode()}"
        return flood
    mg = Mailgate(work / "headers", {})
    try:
        many = b"".join(b"X-Flood-%d: v\r\n" % i for i in range(100_000))
        one = b"X-Big: " + b"z" * (9 * 1024 * 1024) + b"\r\n"
        return [await _measured(mg, "headers", flood_of("100,000 header lines", many)),
                await _measured(mg, "headers", flood_of("one 9 MiB header line", one))]
    finally:
        mg.stop()


SCENARIOS = {"idle": idle, "slowloris": slowloris, "line": line, "rcpts": rcpts,
             "message": message, "headers": headers}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="floods-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        for name in args.scenario or list(SCENARIOS):
            for text in await SCENARIOS[name](args, Path(tmp)):
                print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", metavar="SCENARIO",
                        help=f"one or more of: {', '.join(SCENARIOS)}")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections")
    parser.add_argument("--slow", type=int, default=200, help="slowloris clients")
    parser.add_argument("--gb", type=float, default=1.0, help="message size in GiB")
    parser.add_argument("--no-postfix", action="store_true", help="skip the reference Postfix")
    args = parser.parse_args()
    unknown = [name for name in args.scenario if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario: {', '.join(unknown)}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
