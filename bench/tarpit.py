"""Tarpit: thousands of spam clients held in the error tarpit while real mail flows.

A holder process opens N connections (default 5,000), makes each one reach the soft error
limit with unknown commands, and keeps it in the tarpit: every `--pace` seconds it sends one
more command, whose reply the server delays by smtpd_error_sleep_time. Meanwhile
`smtp-source -s 10 -m 5000` sends legitimate mail. Prints legitimate msg/s with and without
the held clients, for mailgate and (when installed) the reference Postfix in the same run.
Settings as the article: smtpd_soft_error_limit = 3, smtpd_hard_error_limit = 6,
smtpd_error_sleep_time = 1s.
Usage: bench/tarpit [-n HELD] [-m MESSAGES] [--pace S] [--no-postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import REFERENCE, descendants, main_cf, proc_rss_kb, serve, server_cpu  # noqa: E402

SETTINGS = {"smtpd_soft_error_limit": "3", "smtpd_hard_error_limit": "6",
            "smtpd_error_sleep_time": "1s", "smtpd_client_connection_count_limit": "0"}


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hold_one(port: int, pace: float, ready: asyncio.Queue[bool],
                    stop: asyncio.Event) -> None:
    """One spam client: 3 errors, then one command every `pace` s, each reply delayed."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        for _ in range(3):  # three errors: now at the soft limit
            writer.write(b"FOO\r\n")
            await reader.readline()
        await ready.put(True)
        while not stop.is_set():  # NOOP: no further error, but its reply waits too
            writer.write(b"NOOP\r\n")
            await reader.readline()
            await asyncio.sleep(pace)
    except (OSError, asyncio.IncompleteReadError):
        await ready.put(False)


async def hold(port: int, count: int, pace: float) -> None:
    """Hold `count` clients in the tarpit until SIGTERM; print "held N" when they are."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ready: asyncio.Queue[bool] = asyncio.Queue()
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(_hold_one(port, pace, ready, stop)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # do not overrun the listen backlog
    held = 0
    deadline = time.monotonic() + 90  # Postfix serves only default_process_limit clients
    for _ in range(count):
        try:
            held += await asyncio.wait_for(ready.get(), max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            break
    print(f"held {held}", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()


def holder_main(port: int, count: int, pace: float) -> None:
    raise_nofile()
    asyncio.run(hold(port, count, pace))


def start_holder(port: int, count: int, pace: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, "--hold", str(port), "-n", str(count),
                             "--pace", str(pace)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.match(r"held (\d+)", line)
    return proc, int(m.group(1)) if m else 0


def smtp_source(port: int, messages: int, timeout: float) -> tuple[float, bool]:
    start = time.monotonic()
    try:
        subprocess.run(["/usr/sbin/smtp-source", "-s", "10", "-m", str(messages), "-l", "2048",
                        "-f", "bench@remote.example", "-t", "bench@example.test",
                        f"127.0.0.1:{port}"], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL)
        return time.monotonic() - start, True
    except subprocess.TimeoutExpired:
        return time.monotonic() - start, False


def queued(log: Path) -> int:
    """Messages accepted so far, from the smtpd `client=` lines in the log."""
    try:
        return sum(1 for line in log.read_text(errors="replace").splitlines()
                   if "/smtpd[" in line and ": client=" in line)
    except FileNotFoundError:
        return 0


def measure(name: str, port: int, log: Path, args: argparse.Namespace,
            cpu_pid: int | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for phase in ("free", "tarpit"):
        holder = None
        held = 0
        if phase == "tarpit":
            holder, held = start_holder(port, args.held, args.pace)
        before = queued(log)
        seconds, done = smtp_source(port, args.messages, args.timeout)
        accepted = args.messages if done else queued(log) - before
        rate = accepted / seconds
        out[phase] = rate
        print(f"{name:9s} {phase:6s} held {held:5d}  {accepted:6d} messages in {seconds:6.1f} s"
              f"  = {rate:7.1f} msg/s{'' if done else '  (cut off at the time limit)'}",
              flush=True)
        if holder is not None:
            holder.send_signal(signal.SIGTERM)
            holder.wait(60)
    print(f"{name:9s} with the tarpit: {out['tarpit'] / out['free']:.0%} of tarpit-free "
          "throughput", flush=True)
    return out


def run_mailgate(args: argparse.Namespace, work: Path) -> dict[str, float]:
    proc, port = serve(main_cf(work, {"mynetworks": "127.0.0.0/8",
                                      "smtpd_max_connections": "20000", **SETTINGS}))
    try:
        result = measure("mailgate", port, work / "maillog", args)
        cpu = server_cpu(proc.pid)
        print(f"mailgate  server CPU {cpu:.1f} s, RSS of its processes "
              f"{sum(proc_rss_kb(p) for p in [proc.pid, *descendants(proc.pid)]) // 1024} MB")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return result


def run_postfix(args: argparse.Namespace, work: Path) -> dict[str, float] | None:
    if not REFERENCE.exists() or not Path("/usr/sbin/postfix").exists():
        return None
    fragment = work.parent / "postfix.cf"
    fragment.write_text("".join(f"{k} = {v}\n" for k, v in SETTINGS.items()))
    subprocess.run([str(REFERENCE), "start", "--dir", str(work), "--port", str(args.port),
                    "--users", "bench", "--hostname", "mx.bench.test", "--main-cf",
                    str(fragment), "--discard"], check=True, stdout=subprocess.DEVNULL)
    try:
        return measure("postfix", args.port, work / "maillog", args)
    finally:
        subprocess.run([str(REFERENCE), "stop", "--dir", str(work)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--held", type=int, default=5000)
    parser.add_argument("-m", "--messages", type=int, default=5000)
    parser.add_argument("--pace", type=float, default=10.0,
                        help="seconds between two commands of a held client")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="cut a smtp-source run off after this many seconds")
    parser.add_argument("--port", type=int, default=2797, help="reference Postfix port")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--hold", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        holder_main(args.hold, args.held, args.pace)
        return 0
    raise_nofile()
    print(f"tarpit: {args.held} held clients (one command per {args.pace:g} s each), "
          f"smtp-source -s 10 -m {args.messages}; soft 3, hard 6, sleep 1s; "
          f"{os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="mailgate-tarpit-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        mg = run_mailgate(args, Path(tmp) / "mailgate")
        pf = None if args.no_postfix else run_postfix(args, Path(tmp) / "postfix")
        if pf is not None:
            ratio = (f"{mg['tarpit'] / pf['tarpit']:.1f}x" if pf["tarpit"]
                     else "postfix accepted nothing")
            print(f"with {args.held} held: mailgate {mg['tarpit']:.1f} msg/s, postfix "
                  f"{pf['tarpit']:.1f} msg/s ({ratio})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
