"""Restrictions: the article's restriction list over a 100,000-entry access table.

1. Evaluations per second on one core: the whole RCPT-time evaluation (with
   smtpd_delay_reject = yes that is the client, HELO, sender, relay and recipient lists),
   in-process, for a mix of clients, HELO names, senders and recipients that miss the table
   (the expensive case: every parent domain and address prefix is looked up).
2. Its share of per-message CPU: `smtp-source` through mailgate with the list and without
   any (default relay control only), server CPU per message for each.
Usage: bench/restrictions [-n EVALUATIONS] [-e ENTRIES] [-m MESSAGES]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import main_cf, serve, server_cpu  # noqa: E402

ARTICLE = {  # the article's list without its DNS-based restrictions (issue 5 adds those)
    "smtpd_helo_required": "yes",
    "smtpd_delay_reject": "yes",
    "mynetworks": "10.0.0.0/8",
    "smtpd_client_restrictions": "permit_mynetworks, check_client_access hash:{access}",
    "smtpd_helo_restrictions": "permit_mynetworks, reject_invalid_helo_hostname, "
                               "reject_non_fqdn_helo_hostname, check_helo_access hash:{access}",
    "smtpd_sender_restrictions": "permit_mynetworks, reject_non_fqdn_sender, "
                                 "check_sender_access hash:{access}",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    "smtpd_recipient_restrictions": "reject_unauth_pipelining, reject_non_fqdn_recipient, "
                                    "check_recipient_access hash:{access}, "
                                    "reject_unlisted_recipient, permit",
    "smtpd_data_restrictions": "reject_unauth_pipelining",
}


def write_table(path: Path, entries: int) -> None:
    rng = random.Random(1)
    lines = []
    for i in range(entries):
        kind = i % 4
        if kind == 0:
            lines.append(f"192.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} "
                         "REJECT listed client")
        elif kind == 1:
            lines.append(f"spam{i}.example REJECT listed domain")
        elif kind == 2:
            lines.append(f"user{i}@bulk{i % 977}.example REJECT listed address")
        else:
            lines.append(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256} REJECT listed host")
    path.write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", f"hash:{path}"],
                   check=True)


async def evaluate(etc: Path, count: int) -> tuple[float, int]:
    from mailgate.app import build_engine, build_resolver, interface_addresses
    from mailgate.config.config import Config
    from mailgate.engine.context import CheckState, Client
    from mailgate.maps import default_registry

    cfg = Config.load(str(etc), [])
    registry = default_registry()
    local = interface_addresses(cfg, ["127.0.0.1"])
    engine, _ = build_engine(cfg, registry, build_resolver(cfg, registry, local),
                             lambda text: None, local)
    rng = random.Random(2)
    states = []
    for i in range(256):
        client = Client(f"host{i}.isp{i % 13}.example", f"203.0.{i % 256}.{rng.randrange(256)}",
                        0)
        st = CheckState(client, helo=f"host{i}.isp{i % 13}.example",
                        sender=f"someone{i}@sender{i % 31}.example", where="RCPT",
                        protocol="ESMTP")
        states.append(st)
    rejected = 0
    start = time.process_time()
    for n in range(count):
        st = states[n & 255]
        st.recipient_rcptmap_checked = False
        if (await engine.check_rcpt(st, "bench@example.test")).reply is not None:
            rejected += 1
    return time.process_time() - start, rejected


def server_cpu_per_message(etc: Path, messages: int) -> float:
    proc, port = serve(etc)
    try:
        cpu0 = server_cpu(proc.pid)
        subprocess.run(["/usr/sbin/smtp-source", "-s", "10", "-m", str(messages), "-l", "2048",
                        "-M", "client.bench.example", "-f", "bench@remote.example",
                        "-t", "bench@example.test",
                        f"127.0.0.1:{port}"], check=True, timeout=3600)
        cpu = server_cpu(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return cpu / messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--evaluations", type=int, default=100000)
    parser.add_argument("-e", "--entries", type=int, default=100000)
    parser.add_argument("-m", "--messages", type=int, default=5000)
    parser.add_argument("-r", "--repeat", type=int, default=3,
                        help="server runs of each kind (the least disturbed one counts)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailgate-restrictions-") as tmp:
        os.chmod(tmp, 0o711)  # started as root, mailgate works as mail_owner in it
        work = Path(tmp)
        table = work / "access"
        write_table(table, args.entries)
        settings = {k: v.format(access=table) for k, v in ARTICLE.items()}
        etc = main_cf(work / "article", settings)
        seconds, rejected = asyncio.run(evaluate(etc, args.evaluations))
        per_eval = seconds / args.evaluations
        print(f"article list, {args.entries} table entries: {args.evaluations} RCPT evaluations "
              f"in {seconds:.2f} CPU s = {args.evaluations / seconds:,.0f} evaluations/s on one "
              f"core ({per_eval * 1e6:.1f} us each; {rejected} rejected)")
        plain = main_cf(work / "plain", {})
        runs = [(server_cpu_per_message(etc, args.messages),
                 server_cpu_per_message(plain, args.messages)) for _ in range(args.repeat)]
        with_list = min(r[0] for r in runs)  # the least disturbed run of each
        without = min(r[1] for r in runs)
        print("server CPU per message (ms), with/without the list, per run: " + ", ".join(
            f"{a * 1e3:.2f}/{b * 1e3:.2f}" for a, b in runs))
        print(f"server CPU per message: {with_list * 1e3:.2f} ms with the list, "
              f"{without * 1e3:.2f} ms without; the list's share: "
              f"{max(with_list - without, 0) / with_list:.1%} (measured), "
              f"{per_eval / with_list:.1%} (one evaluation / CPU per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
