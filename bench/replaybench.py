"""bench/replay: `mailgate replay` over a generated journal of 1,000,000 transactions: wall
time, CPU time of all its processes, peak RSS of the largest process, transactions per
second, cache hits, and the load average before and after (other work on the machine).

The journal is mixed as a gateway's month is: most transactions from a few thousand
mail servers that write again and again (their names verified, a few senders each, the
site's users as recipients), the rest spam from ever new addresses (often no name, a bad
HELO, listed in the DNS list), dictionary attacks and relay attempts. Every record carries
the DNS answers its checks saw (the list's answer for the client, the sender domain's MX).
The configuration replayed adds a stricter list than the one recorded (names, HELO,
sender domains, a client table, the DNS list).
Usage: bench/replay [-n TRANSACTIONS] [--journal PATH] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailgate.dns.resolver import NOTFOUND, OK, Answer, Record
from mailgate.engine.context import NAME_OK, NAME_PERM, NAME_TEMP, Client
from mailgate.engine.reply import Rule
from mailgate.journal.record import Outcome, Transaction, encode

USERS = 2000
LIST = "zen.example"
START = 1_764_547_200.0  # 2025-12-01
MONTH = 30 * 86400


def main_cf(root: Path) -> str:
    """The configuration replayed (B), with its tables under `root`."""
    (root / "vmailbox").write_text("".join(f"user{i}@example.com x/\n" for i in range(USERS)))
    (root / "clients.cidr").write_text("".join(f"100.{64 + i}.0.0/16 REJECT bad network\n"
                                               for i in range(20)))
    (root / "senders").write_text("".join(f"promo{i}.example REJECT no promotions\n"
                                          for i in range(200)))
    return (f"myhostname = mx.example.com\nmydestination = localhost\n"
            f"mynetworks = 192.168.0.0/16\nvirtual_mailbox_domains = example.com\n"
            f"virtual_mailbox_maps = texthash:{root / 'vmailbox'}\n"
            "smtpd_helo_required = yes\n"
            "smtpd_helo_restrictions = permit_mynetworks, reject_invalid_helo_hostname, "
            "reject_non_fqdn_helo_hostname\n"
            f"smtpd_sender_restrictions = reject_non_fqdn_sender, check_sender_access "
            f"texthash:{root / 'senders'}, reject_unknown_sender_domain\n"
            "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, "
            f"check_client_access cidr:{root / 'clients.cidr'}, reject_rbl_client {LIST}, "
            "reject_unknown_client_hostname\n")


class Generator:
    """Transactions of a month, as the journal records them."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.servers = [(f"203.{i // 250 % 250}.{i % 250}.{10 + i % 7}",
                         f"mta{i}.sender{i % 900}.example") for i in range(3000)]
        self.domains = [f"sender{i}.example" for i in range(900)]

    def answer(self, name: str, rdtype: str, listed: bool) -> Answer:
        if not listed:
            return Answer(NOTFOUND, error="Host not found", nxdomain=True, ttl=300)
        data = "127.0.0.2" if rdtype == "A" else "listed, see https://zen.example"
        return Answer(OK, (Record(name, 300, rdtype, data),))

    def dns(self, tx: Transaction, listed: bool, domain: str, mx: bool) -> None:
        query = ".".join(reversed(tx.client.addr.split("."))) + "." + LIST
        tx.dns[(query, "A")] = self.answer(query, "A", listed)
        if listed:
            tx.dns[(query, "TXT")] = self.answer(query, "TXT", True)
        if mx:
            tx.dns[(domain, "MX")] = Answer(OK, (Record(domain, 3600, "MX", f"mx.{domain}", 10),))
        else:  # then its address (reject_unknown_sender_domain)
            for rdtype in ("MX", "A", "AAAA"):
                tx.dns[(domain, rdtype)] = Answer(NOTFOUND, error="Host not found",
                                                  nxdomain=True, ttl=300)

    def one(self, t: float) -> Transaction:
        rnd, roll = self.rnd, self.rnd.random()
        if roll < 0.55:  # a known server: Zipf-like, a few senders, real users
            addr, name = self.servers[min(int(rnd.paretovariate(1.1)) - 1, 2999)]
            domain = name.split(".", 1)[1]
            tx = Transaction(t, Client(name, addr, rnd.randrange(1024, 65536)),
                             f"{rnd.choice(['news', 'info', 'noreply'])}@{domain}",
                             [f"user{min(int(rnd.paretovariate(1.2)), USERS - 1)}@example.com"
                              for _ in range(rnd.choice((1, 1, 1, 2)))], helo=name,
                             size=rnd.randrange(2000, 90000), data=True, end_of_data=True)
            tx.message_size = tx.size
            self.dns(tx, False, domain, True)
            tx.then.rcpt = [Outcome(250)] * len(tx.recipients)
            tx.then.data, tx.then.eod = Outcome(354), Outcome(250)
            return tx
        addr = f"100.{rnd.randrange(64, 128)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        status = rnd.choice((NAME_OK, NAME_PERM, NAME_PERM, NAME_TEMP))
        name = f"h{rnd.randrange(10**6)}.dyn.example" if status == NAME_OK else "unknown"
        domain = f"promo{rnd.randrange(400)}.example" if roll < 0.8 else \
            rnd.choice(self.domains)
        users = [f"user{rnd.randrange(USERS)}@example.com"] if roll < 0.9 else \
            [f"{rnd.choice(['admin', 'info', 'sales'])}{rnd.randrange(99)}@example.com"
             for _ in range(3)] if roll < 0.97 else [f"x{rnd.randrange(999)}@relay.example"]
        tx = Transaction(t, Client(name, addr, rnd.randrange(1024, 65536), name, status, status),
                         f"m{rnd.randrange(10**5)}@{domain}", users,
                         helo=rnd.choice(("localhost", "[100.64.0.1]", name, "pc")))
        self.dns(tx, rnd.random() < 0.4, domain, rnd.random() < 0.7)
        tx.then.rcpt = [Outcome(550, "5.1.1", f"<{r}>: Recipient address rejected: User "
                                "unknown", Rule("reject_unlisted_recipient"))
                        if "@example.com" in r and not r.startswith("user") else
                        Outcome(454, "4.7.1", f"<{r}>: Relay access denied",
                                Rule("reject_unauth_destination"))
                        if "@example.com" not in r else Outcome(250) for r in users]
        return tx


def generate(path: Path, count: int, seed: int = 7) -> None:
    gen = Generator(seed)
    with path.open("w", buffering=1 << 20) as out:
        for n in range(count):
            out.write(encode(gen.one(START + MONTH * n / count)))


def run(args: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of its processes, peak RSS of the largest process in MiB,
    stdout) of one command."""
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"replay failed: {done.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, done.stdout


def load() -> str:
    return "/".join(f"{n:.2f}" for n in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--transactions", type=int, default=1_000_000)
    parser.add_argument("--journal", help="use (or keep) the generated journal at this path")
    parser.add_argument("--jobs", type=int, default=0, help="replay processes (0: one a core)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="replaybench."))
    journal = Path(args.journal) if args.journal else tmp / "journal"
    try:
        if not journal.exists():
            t = time.perf_counter()
            generate(journal, args.transactions)
            print(f"generated {args.transactions:,} transactions "
                  f"({journal.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        (tmp / "etc").mkdir()
        (tmp / "etc" / "main.cf").write_text(main_cf(tmp / "etc"))
        stats = tmp / "stats"
        before = load()
        wall, cpu, rss, report = run([sys.executable, "-m", "mailgate.cli", "replay", "-c",
                                      str(tmp / "etc"), "--jobs", str(args.jobs), "--html",
                                      str(stats), str(journal)])
        count = sum(1 for _ in journal.open())
        cached = re.search(r"^\((\d+) of (\d+) transactions had the facts", report, re.M)
        print(f"mailgate replay: {wall:6.2f} s for {count:,} transactions "
              f"({count / wall:,.0f}/s, {os.cpu_count()} cores), CPU {cpu:.1f} s "
              f"({cpu / count * 1e6:.0f} us a transaction), peak RSS {rss} MiB (largest "
              f"process); target < 60 s")
        print(f"  facts evaluated before: {cached.group(1) if cached else '?'} transactions; "
              f"load average {before} before, {load()} after")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
