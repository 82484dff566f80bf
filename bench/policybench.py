"""bench/policyd: `mailgate policyd` under Postfix-style load, on loopback.

C clients (default 100) each keep one connection, as Postfix's smtpd processes do, and send
real policy requests (the 29 attributes Postfix 3.7 sends, protocol_state RCPT) for D
seconds: back to back (saturation), then paced at R requests/s offered (latency counted from
when each request was due). The policy is table-only (cidr client map, non-FQDN sender,
recipient hash map, relay check). Prints requests/s, latency percentiles, CPU per request
and the mix of answers. Postfix has no policy server of its own; with the reference Postfix
installed, the same run measures what delegating costs Postfix: `smtp-source` into Postfix
with the policy's restrictions in its own smtpd_recipient_restrictions, then with
`check_policy_service` pointed at this policyd instead (messages/s, and the ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import REFERENCE, ROOT, free_port, main_cf, server_cpu, smtp_source

POLICY = ("check_client_access cidr:{etc}/clients.cidr, reject_non_fqdn_sender, "
          "check_recipient_access hash:{etc}/recipients, reject_unauth_destination")


NETS = ("198.{}.{}.{}", "10.{}.{}.{}", "100.{}.{}.{}", "100.{}.{}.{}")
FIRST = (lambda c: 18 + (c >> 16) % 2, lambda c: (c >> 16) % 256,
         lambda c: 64 + (c >> 16) % 64, lambda c: 64 + (c >> 16) % 64)


def address(net: int, count: int) -> bytes:
    """A client address in one of the networks, new for every request (a gateway sees many
    clients; replaying a few would only measure the per-client error tarpit)."""
    return NETS[net].format(FIRST[net](count), (count >> 8) % 256, count % 256).encode()


def request(rng: random.Random, i: int) -> tuple[bytes, bytes, int]:
    """A request as (text before the client address, text after it, network)."""
    net = rng.randrange(len(NETS))
    client = "\x00"
    sender = rng.choice(("alice@sender.example", "bob@other.example", "nodots",
                         f"u{i}@bulk.example"))
    rcpt = rng.choice(("bench@example.test", "spamtrap@example.test",
                       f"user{i % 50}@example.test", "someone@elsewhere.example"))
    attrs = {
        "request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
        "client_address": client, "client_name": "unknown", "client_port": str(40000 + i % 20000),
        "reverse_client_name": "unknown", "server_address": "127.0.0.1", "server_port": "25",
        "helo_name": "client.example", "sender": sender, "recipient": rcpt,
        "recipient_count": "0", "queue_id": "", "instance": f"1a2b.{i:x}.0.0", "size": "0",
        "etrn_domain": "", "stress": "", "sasl_method": "", "sasl_username": "",
        "sasl_sender": "", "ccert_subject": "", "ccert_issuer": "", "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "", "encryption_protocol": "", "encryption_cipher": "",
        "encryption_keysize": "0", "policy_context": ""}
    head, tail = ("".join(f"{k}={v}\n" for k, v in attrs.items()) + "\n").split("\x00")
    return head.encode(), tail.encode(), net


def configure(work: Path) -> Path:
    etc = work / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "clients.cidr").write_text("198.18.0.0/15 REJECT listed network\n"
                                      "10.0.0.0/8 OK\n")
    (etc / "recipients").write_text("spamtrap@example.test REJECT\n"
                                    "bench@example.test PREPEND X-Bench: yes\n")
    etc = main_cf(work, {"policyd_listen": "127.0.0.1:0",
                         "policyd_restrictions": POLICY.format(etc=etc),
                         "maillog_file": str(work / "maillog")})
    python = ROOT / ".venv" / "bin" / "python"
    subprocess.run([str(python if python.exists() else sys.executable), "-m", "mailgate.cli",
                    "postmap", f"hash:{etc}/recipients"], check=True)
    return etc


async def client(port: int, payloads: list[tuple[bytes, bytes, int]], until: float,
                 latencies: list[float], answers: dict[bytes, int], interval: float,
                 first: int) -> None:
    """One connection; back to back (interval 0), or one request every `interval` seconds
    with the latency counted from when it was due (no coordinated omission)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    due = time.perf_counter() + random.random() * interval
    try:
        while time.perf_counter() < until:
            if interval:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                start, due = due, due + interval
            else:
                start = time.perf_counter()
            head, tail, net = payloads[i % len(payloads)]
            writer.write(head + address(net, first + i) + tail)
            answer = await reader.readuntil(b"\n\n")
            latencies.append(time.perf_counter() - start)
            key = answer.split(b" ", 1)[0].split(b"\n", 1)[0]
            answers[key] = answers.get(key, 0) + 1
            i += 1
    finally:
        writer.close()


async def load(port: int, clients: int, seconds: float,
               payloads: list[tuple[bytes, bytes, int]], rate: float, run: int
               ) -> tuple[list[float], dict]:
    latencies: list[float] = []
    answers: dict[bytes, int] = {}
    until = time.perf_counter() + seconds
    interval = clients / rate if rate else 0.0
    await asyncio.gather(*(client(port, payloads[n::clients] or payloads, until, latencies,
                                  answers, interval, (run * clients + n) * 1_000_000)
                           for n in range(clients)))
    return latencies, answers


def loader(args: argparse.Namespace, port: int, payloads: list[tuple[bytes, bytes, int]],
           rate: float, run: int) -> tuple[list[float], dict]:
    job = load(port, args.clients, args.seconds, payloads, rate, run)
    try:
        import uvloop
        return uvloop.run(job)
    except ImportError:
        return asyncio.run(job)


def report(title: str, latencies: list[float], answers: dict, elapsed: float, cpu: float,
           load_cpu: float) -> None:
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(n * p))] * 1000

    print(title)
    print(f"  throughput   {n / elapsed:,.0f} requests/s ({n} in {elapsed:.1f} s)")
    print(f"  latency      p50 {pct(0.5):.2f} ms   p90 {pct(0.9):.2f} ms   "
          f"p99 {pct(0.99):.2f} ms   max {latencies[-1] * 1000:.2f} ms")
    print(f"  CPU          server {cpu / n * 1e6:.0f} us/request, load generator "
          f"{load_cpu / n * 1e6:.0f} us/request ({os.cpu_count()} CPUs)")
    print("  answers      " + ", ".join(f"{k.decode()}: {v}" for k, v in sorted(answers.items())))


def postfix_runs(args: argparse.Namespace, work: Path, etc: Path, policyd_port: int
                 ) -> dict[str, float] | None:
    """messages/s through the reference Postfix: restrictions inline, then delegated."""
    if args.no_postfix or not REFERENCE.exists() or not Path("/usr/sbin/postfix").exists():
        return None
    port = free_port()
    inline = POLICY.format(etc=etc).replace("hash:", "texthash:")
    out = {}
    for name, restrictions in (
            ("inline", f"{inline}, permit"),
            ("delegated", f"check_policy_service inet:127.0.0.1:{policyd_port}, "
                          "reject_unauth_destination, permit")):
        directory = work / f"postfix-{name}"
        subprocess.run([str(REFERENCE), "start", "--dir", str(directory), "--port", str(port),
                        "--discard", "--users", "bench", "-o",
                        f"smtpd_recipient_restrictions={restrictions}",
                        "-o", "smtpd_relay_restrictions=", "-o", "mynetworks=10.0.0.0/8"],
                       check=True, stdout=subprocess.DEVNULL)
        try:
            seconds = smtp_source(port, args.messages, 10, 1024, "bench@example.test")
        finally:
            subprocess.run([str(REFERENCE), "stop", "--dir", str(directory)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        out[name] = args.messages / seconds
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--clients", type=int, default=100)
    parser.add_argument("-d", "--seconds", type=float, default=10.0)
    parser.add_argument("-r", "--rate", type=float, default=10000.0,
                        help="requests/s offered in the paced run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-m", "--messages", type=int, default=5000,
                        help="messages smtp-source sends through the reference Postfix")
    parser.add_argument("--no-postfix", action="store_true", help="skip the Postfix runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailgate-policyd-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        etc = configure(Path(tmp))
        python = ROOT / ".venv" / "bin" / "python"
        proc = subprocess.Popen([str(python if python.exists() else sys.executable), "-m",
                                 "mailgate.cli", "policyd", "-c", str(etc)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            m = re.search(r"127\.0\.0\.1:(\d+)", proc.stdout.readline())
            assert m, "mailgate policyd did not start"
            port = int(m.group(1))
            rng = random.Random(args.seed)
            payloads = [request(rng, i) for i in range(5000)]
            for run, (title, rate) in enumerate(((f"saturated: {args.clients} clients back to back", 0.0),
                                (f"paced: {args.clients} clients, {args.rate:,.0f} "
                                 "requests/s offered", args.rate))):
                cpu0, load0 = server_cpu(proc.pid), time.process_time()
                started = time.perf_counter()
                latencies, answers = loader(args, port, payloads, rate, run)
                elapsed = time.perf_counter() - started
                report(title, latencies, answers, elapsed, server_cpu(proc.pid) - cpu0,
                       time.process_time() - load0)
            rates = postfix_runs(args, Path(tmp), etc, port)
        finally:
            proc.terminate()
            proc.wait(10)
    if rates is None:
        print("(reference Postfix not installed: no Postfix runs)")
        return 0
    print(f"Postfix 3.7 + smtp-source -s 10 -m {args.messages} (accept, discard):")
    print(f"  restrictions in Postfix          {rates['inline']:,.1f} msg/s")
    print(f"  delegated to mailgate policyd    {rates['delegated']:,.1f} msg/s "
          f"({rates['delegated'] / rates['inline']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
