"""Defense: legitimate mail (smtp-source) while 1,000 bot sessions pregreet, come from a DNS-listed
network or run a dictionary attack from a moving /24; mailgate (postscreen in process,
automatic blocks) and, for comparison, the reference Postfix with postscreen.

Figures: legitimate msg/s with the bots against a bot-free run (target >= 90%), and the share
of bot recipients refused (target >= 99%). Bots connect from 127.9.x.y (loopback), the DNS
list is the test DNS server on 127.0.0.77:53 (bl.defense.test lists 127.9.1.0/24), every
process started is stopped by its PID.
Usage: bench/defense [--bots N] [--messages N] [--sessions N] [--no-postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from throughput import REFERENCE, count_files, free_port, main_cf, serve  # noqa: E402

DNS_ADDRESS = "127.0.0.77"
LISTED, DICTIONARY, PREGREET = "127.9.1", "127.9.2", "127.9.3"
SCREEN = {"postscreen_greet_action": "enforce", "postscreen_greet_wait": "2s",
          "postscreen_dnsbl_sites": "bl.defense.test*2", "postscreen_dnsbl_threshold": "2",
          "postscreen_dnsbl_action": "enforce", "mynetworks": "127.0.0.2/32",
          "myhostname": "mx.bench.test", "smtpd_client_connection_count_limit": "0"}
ZONE = (f"$ORIGIN bl.defense.test.\n$TTL 300\n@ SOA ns.test. hostmaster.test. 1 3600 600 "
        f"86400 60\n*.{'.'.join(reversed(LISTED.split('.')))} A 127.0.0.2\n")


@dataclass
class Tally:
    """Bot recipients tried and refused (a refused or closed session refuses them all)."""

    tried: int = 0
    refused: int = 0
    sessions: int = 0
    errors: list[str] = field(default_factory=list)


async def _reply(reader: asyncio.StreamReader) -> str:
    """One SMTP reply (all its lines); empty when the connection closed."""
    while True:
        line = await reader.readline()
        if not line:
            return ""
        if line[3:4] != b"-":
            return line.decode("latin-1")


async def bot(port: int, source: str, kind: str, rcpts: list[str], tally: Tally) -> None:
    refused = len(rcpts)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0)), 10)
    except (OSError, TimeoutError) as exc:
        tally.errors.append(f"{source}: {exc}")
        tally.tried += len(rcpts)
        tally.refused += refused
        return
    try:
        if kind == "pregreet":
            writer.write(b"EHLO bot.example\r\n")  # before the greeting
        if not (await asyncio.wait_for(_reply(reader), 30)).startswith("220"):
            return
        if kind != "pregreet":
            writer.write(b"EHLO bot.example\r\n")
        if not (await asyncio.wait_for(_reply(reader), 30)).startswith("250"):
            return
        writer.write(b"MAIL FROM:<spam@bot.example>\r\n")
        if not (await asyncio.wait_for(_reply(reader), 30)).startswith("250"):
            return
        refused = 0
        for rcpt in rcpts:
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            if not (await asyncio.wait_for(_reply(reader), 30)).startswith("250"):
                refused += 1
        writer.write(b"QUIT\r\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        tally.tried += len(rcpts)
        tally.refused += refused
        tally.sessions += 1
        writer.close()


async def bots(port: int, count: int, tally: Tally, concurrency: int = 50) -> None:
    """`count` sessions: a third pregreet, a third from the listed /24, a third guess users
    from a /24 where each address is used once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            kind = ("pregreet", "listed", "dictionary")[n % 3]
            host = 1 + (n // 3) % 250
            if kind == "dictionary":
                await bot(port, f"{DICTIONARY}.{host}", kind,
                          [f"guess{n}-{i}@example.test" for i in range(3)], tally)
            else:
                await bot(port, f"{LISTED if kind == 'listed' else PREGREET}.{host}", kind,
                          ["bench@example.test"] * 2, tally)

    await asyncio.gather(*(one(n) for n in range(count)))


def legit(port: int, messages: int, sessions: int) -> float:
    """Seconds smtp-source takes to send `messages` to bench@example.test."""
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    started = time.monotonic()
    subprocess.run([source, "-s", str(sessions), "-m", str(messages), "-l", "2048", "-f",
                    "legit@sender.example", "-t", "bench@example.test", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=900)
    return time.monotonic() - started


def measure(port: int, args: argparse.Namespace) -> tuple[float, float, Tally]:
    """msg/s without bots, msg/s while the bots run, the bots' tally."""
    legit(port, args.sessions, args.sessions)  # every legit session passes postscreen once
    quiet = args.messages / legit(port, args.messages, args.sessions)
    tally = Tally()
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(
        legit(port, args.messages, args.sessions)))
    runner = threading.Thread(target=lambda: asyncio.run(bots(port, args.bots, tally)))
    runner.start()
    worker.start()
    worker.join()
    runner.join()
    return quiet, args.messages / result[0], tally


def show(name: str, quiet: float, busy: float, tally: Tally) -> None:
    share = tally.refused / tally.tried if tally.tried else 0.0
    print(f"{name:9s} legit {quiet:7.1f} msg/s alone, {busy:7.1f} msg/s with bots "
          f"({100 * busy / quiet:5.1f}%, target >= 90%); bot recipients refused "
          f"{tally.refused}/{tally.tried} ({100 * share:5.1f}%, target >= 99%); "
          f"{tally.sessions} bot sessions", flush=True)


def run_mailgate(work: Path, args: argparse.Namespace) -> None:
    port = free_port()
    etc = main_cf(work, {**SCREEN, "resolver_servers": f"{DNS_ADDRESS}:53",
                         "auto_block_threshold": "10", "smtpd_listen": ""})
    (etc / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - 1 postscreen\nsmtpd pass - - n - - smtpd\n")
    proc, _ = serve(etc)
    try:
        show("mailgate", *measure(port, args))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def run_postfix(work: Path, args: argparse.Namespace) -> None:
    port = free_port()
    resolv = work.parent / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\n")
    fragment = work.parent / "postfix.cf"
    fragment.write_text("".join(f"{k} = {v}\n" for k, v in SCREEN.items()))
    subprocess.run([str(REFERENCE), "start", "--dir", str(work), "--port", str(port),
                    "--users", "bench", "--hostname", "mx.bench.test", "--main-cf",
                    str(fragment), "--resolv-conf", str(resolv)], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        etc = str(work / "etc")
        for entry in (f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - 1 postscreen",
                      "smtpd/pass=smtpd pass - - n - - smtpd",
                      "dnsblog/unix=dnsblog unix - - n - 0 dnsblog",
                      "tlsproxy/unix=tlsproxy unix - - n - 0 tlsproxy"):
            subprocess.run(["postconf", "-c", etc, "-Me", entry], check=True, timeout=60)
        log = work / "maillog"
        before = log.read_text(errors="replace").count(": reload -- version")
        subprocess.run(["postfix", "-c", etc, "reload"], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30  # readiness: the master logged the reload
        while log.read_text(errors="replace").count(": reload -- version") <= before:
            if time.monotonic() > deadline:
                raise RuntimeError("the reference Postfix did not reload")
            time.sleep(0.05)
        show("postfix", *measure(port, args))
    finally:
        subprocess.run([str(REFERENCE), "stop", "--dir", str(work)], timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()
    from support.dns import start

    with tempfile.TemporaryDirectory(prefix="mailgate-defense-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        zones = Path(tmp) / "zones"
        zones.mkdir()
        (zones / "defense.zone").write_text(ZONE)
        dns = start(zones=zones, address=DNS_ADDRESS, port=53)
        try:
            print(f"-- {args.bots} bot sessions with smtp-source -s {args.sessions} -m "
                  f"{args.messages}", flush=True)
            run_mailgate(Path(tmp) / "mailgate", args)
            print(f"mailgate delivered {count_files(Path(tmp) / 'mailgate' / 'mail')} legit "
                  "messages", flush=True)
            if not args.no_postfix and REFERENCE.exists():
                run_postfix(Path(tmp) / "postfix", args)
        finally:
            dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
