"""DNS checks under load: many concurrent sessions, each needing three DNS blocklist lookups,
a client name lookup and a sender-domain check, against the test DNS server on loopback
answering every query after a fixed delay (default 50 ms).

Each session comes from its own loopback address (127.1.0.0 and up, so every blocklist query
is new) and uses its own sender domain (`sNNN.senders.bench.test`, MX by wildcard), then sends
one small message; the 1,000 sessions start over the first 2 s (not in one millisecond);
the client pauses `--think` seconds before each command (its network
round trip), so that the machine is not saturated by the load generator and the DNS server
that share it. Printed: messages/s, and RCPT and greeting latency (p50/p99/max), with the
DNS checks and without them (same load, no DNS restrictions), for mailgate and, when it is
installed, the reference Postfix with the same restrictions (its resolver pointed at the
same DNS server through the reference script's --resolv-conf; the DNS server then listens
on 127.0.0.153:53).
Usage: bench/dns [-c CONCURRENT] [-m MESSAGES] [--delay S] [--think S] [--no-postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
from tarpit import raise_nofile  # noqa: E402
from throughput import REFERENCE, main_cf, serve, server_cpu  # noqa: E402

from support import dns as dns_support  # noqa: E402

ZONE = """$ORIGIN .
$TTL 300
@ SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 60
*.senders.bench.test MX 10 mx.bench.test.
mx.bench.test A 127.0.0.1
bl1.bench.test NS ns.bench.test.
bl2.bench.test NS ns.bench.test.
bl3.bench.test NS ns.bench.test.
ns.bench.test A 127.0.0.1
"""
DNS_ADDRESS = "127.0.0.153"
SESSION_TIMEOUT = 30.0
DNS_CHECKS = {
    "smtpd_sender_restrictions": "reject_unknown_sender_domain",
    "smtpd_recipient_restrictions": "reject_rbl_client bl1.bench.test, "
                                    "reject_rbl_client bl2.bench.test, "
                                    "reject_rbl_client bl3.bench.test",
}


def source(i: int) -> str:
    n = 65536 + i  # 127.1.0.0 onwards
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255 or 1}"


async def one(port: int, i: int, rcpt_times: list[float], greet_times: list[float],
              think: float) -> bool:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   local_addr=(source(i), 0))
    try:
        async def cmd(text: str) -> bytes:
            if think:
                await asyncio.sleep(think)  # the client's network round trip
            writer.write(text.encode() + b"\r\n")
            last = b""
            while True:
                last = await reader.readline()
                if len(last) < 4 or last[3:4] != b"-":
                    return last

        line = await reader.readline()
        greet_times.append(time.monotonic() - start)
        if not line.startswith(b"220"):
            print("greeting:", line, file=sys.stderr)
            return False
        await cmd(f"EHLO c{i}.client.bench.test")
        await cmd(f"MAIL FROM:<u{i}@s{i}.senders.bench.test>")
        if think:
            await asyncio.sleep(think)
        t = time.monotonic()
        writer.write(b"RCPT TO:<bench@example.test>\r\n")
        reply = await reader.readline()
        rcpt_times.append(time.monotonic() - t)
        if not reply.startswith(b"250"):
            print("RCPT:", reply, file=sys.stderr)
            return False
        await cmd("DATA")
        ok = (await cmd(f"Subject: {i}\r\n\r\nbody\r\n.")).startswith(b"250")
        await cmd("QUIT")
        return ok
    finally:
        writer.close()


async def load(port: int, concurrency: int, messages: int, offset: int, think: float,
               ramp: float = 2.0, limit: float = 120.0
               ) -> tuple[float, int, list[float], list[float]]:
    """Run the sessions; none starts after `limit` seconds (the run is then cut short)."""
    rcpt: list[float] = []
    greet: list[float] = []
    queue = iter(range(offset, offset + messages))
    accepted = 0
    lost = [0]
    start = time.monotonic()

    async def worker(k: int) -> None:
        nonlocal accepted
        await asyncio.sleep(k * ramp / concurrency)  # arrivals spread, not one burst
        for i in queue:
            if time.monotonic() - start > limit:
                return
            try:
                async with asyncio.timeout(SESSION_TIMEOUT):  # a connection lost in a full
                    ok = await one(port, i, rcpt, greet, think)  # listen queue never answers
                accepted += ok
            except TimeoutError:
                lost[0] += 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                print("error:", repr(exc), file=sys.stderr)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    if lost[0]:
        print(f"  {lost[0]} sessions got no answer within {SESSION_TIMEOUT:.0f} s", flush=True)
    return time.monotonic() - start, accepted, rcpt, greet


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else 0.0


def start_mailgate(work: Path, dns: str, checks: bool) -> tuple[subprocess.Popen[str], int]:
    return serve(main_cf(work, {
        "mynetworks": "127.0.0.1/32", "resolver_servers": dns, "resolver_hosts_file": "",
        "smtpd_max_connections": "20000", "smtpd_client_connection_count_limit": "0",
        **(DNS_CHECKS if checks else {})}))


def report(name: str, checks: bool, args: argparse.Namespace,
           result: tuple[float, int, list[float], list[float]], cpu: float | None) -> None:
    seconds, accepted, rcpt, greet = result
    label = f"{name} {'DNS checks' if checks else 'no DNS checks'}"
    print(f"{label:23s} {accepted:6d}/{args.messages} accepted in {seconds:6.1f} s = "
          f"{accepted / seconds:7.1f} msg/s; RCPT p50 {pct(rcpt, 0.5):6.1f} ms, "
          f"p99 {pct(rcpt, 0.99):6.1f} ms, max {pct(rcpt, 1.0):6.1f} ms; greeting p50 "
          f"{pct(greet, 0.5):6.1f} ms, p99 {pct(greet, 0.99):6.1f} ms"
          + (f"; server CPU {cpu:.1f} s" if cpu is not None else "")
          + ("" if accepted == args.messages else "  (cut off: no session starts after "
             f"{args.limit:.0f} s)"), flush=True)


def run(args: argparse.Namespace, work: Path, dns: str, checks: bool, offset: int) -> None:
    proc, port = start_mailgate(work, dns, checks)
    try:
        result = asyncio.run(load(port, args.concurrent, args.messages, offset, args.think,
                                  limit=args.limit))
        cpu = server_cpu(proc.pid)
        report("mailgate", checks, args, result, cpu)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def run_postfix(args: argparse.Namespace, work: Path, checks: bool, offset: int) -> None:
    """The reference Postfix with the same restrictions, its resolv.conf naming the DNS
    server (a private mount namespace, see the reference script)."""
    work.mkdir(parents=True)
    fragment = work / "postfix.cf"
    resolv = work / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\n")
    fragment.write_text("mynetworks = 127.0.0.1/32\nsmtpd_client_connection_count_limit = 0\n"
                        + "".join(f"{k} = {v}\n" for k, v in
                                  (DNS_CHECKS if checks else {}).items()))
    subprocess.run([str(REFERENCE), "start", "--dir", str(work / "pf"), "--port",
                    str(args.port), "--users", "bench", "--hostname", "mx.bench.test",
                    "--main-cf", str(fragment), "--discard", "--resolv-conf", str(resolv)],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        result = asyncio.run(load(args.port, args.concurrent, args.messages, offset,
                                  args.think, limit=args.limit))
        report("postfix", checks, args, result, None)
    finally:
        subprocess.run([str(REFERENCE), "stop", "--dir", str(work / "pf")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--concurrent", type=int, default=1000)
    parser.add_argument("-m", "--messages", type=int, default=5000)
    parser.add_argument("--delay", type=float, default=0.05, help="DNS answer delay (s)")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--limit", type=float, default=60.0,
                        help="start no session after this many seconds of a run")
    parser.add_argument("--port", type=int, default=2798, help="reference Postfix port")
    parser.add_argument("--think", type=float, default=0.5,
                        help="client pause before each command (s): its network round trip; "
                             "0 = as fast as possible (the machine saturates)")
    args = parser.parse_args()
    raise_nofile()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-dns-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        zones = Path(tmp) / "zones"
        zones.mkdir()
        (zones / "bench.zone").write_text(ZONE)
        postfix = not args.no_postfix and REFERENCE.exists() and \
            Path("/usr/sbin/postfix").exists()
        try:  # Postfix's resolver needs port 53
            server = dns_support.start(delay=args.delay, zones=zones, address=DNS_ADDRESS,
                                       port=53 if postfix else 0)
        except RuntimeError:
            postfix = False
            server = dns_support.start(delay=args.delay, zones=zones, address=DNS_ADDRESS)
        print(f"{args.concurrent} concurrent sessions, {args.messages} messages, DNS answers "
              f"delayed {args.delay * 1000:.0f} ms, client round trip {args.think * 1000:.0f} "
              "ms; per session: PTR at connect, 3 DNSBL lookups (started at connect), sender "
              "domain MX/A/AAAA", flush=True)
        try:
            run(args, Path(tmp) / "plain", server.address, False, 0)
            run(args, Path(tmp) / "dns", server.address, True, args.messages)
            if postfix:
                run_postfix(args, Path(tmp) / "pf-plain", False, 2 * args.messages)
                run_postfix(args, Path(tmp) / "pf-dns", True, 3 * args.messages)
            else:
                print("reference Postfix not run (not installed, --no-postfix, or no port 53)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
