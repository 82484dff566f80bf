"""bench/report: `mailgate report` beside `pflogsumm` on the same generated log, in the same run:
wall time, peak RSS, the ratio, and whether their grand totals agree.

The log (default 1,000,000 lines) is Postfix-shaped and mixed as a gateway's is: most sessions
rejected (DNS lists, unknown users, relay attempts, bad HELO, a dictionary attack walking a
/24), the rest accepted and delivered (some deferred first, some bounced), spread over a day.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MONTH = "Nov"
TOTALS = ("received", "delivered", "deferred", "bounced", "rejected")
REJECTS = (
    "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.example; "
    "https://zen.example/query/ip/{ip}",
    "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
    "454 4.7.1 <{rcpt}>: Relay access denied",
    "504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname",
    "450 4.7.25 Client host rejected: cannot find your hostname, [{ip}]",
    "450 4.1.8 <{sender}>: Sender address rejected: Domain not found",
)


class Log:
    """Writes lines with a clock that advances over one day."""

    def __init__(self, out, lines: int) -> None:  # type: ignore[no-untyped-def]
        self.out = out
        self.step = 86400 / lines
        self.t = 0.0
        self.n = 0
        self.pid = 1000

    def line(self, prog: str, text: str) -> None:
        s = min(int(self.t), 86399)
        self.out.write(f"{MONTH} 25 {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} mx "
                       f"postfix/{prog}[{self.pid}]: {text}\n")
        self.t += self.step
        self.n += 1


def generate(path: Path, lines: int, seed: int = 9) -> None:
    rnd = random.Random(seed)
    qseq = 0
    with path.open("w", buffering=1 << 20) as out:
        log = Log(out, lines)
        while log.n < lines:
            log.pid = rnd.randrange(1000, 30000)
            roll = rnd.random()
            if roll < 0.08:  # the moving spammer: one /24, a few guesses per address
                ip = f"198.51.100.{rnd.randrange(1, 255)}"
            else:
                ip = f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}." \
                     f"{rnd.randrange(1, 255)}"
            name = "unknown" if rnd.random() < 0.5 else f"host{rnd.randrange(10**6)}.example"
            client = f"{name}[{ip}]"
            helo = f"helo{rnd.randrange(1000)}"
            log.line("smtpd", f"connect from {client}")
            if roll < 0.08 or roll < 0.65:
                for _ in range(rnd.randrange(1, 4)):
                    rcpt = f"user{rnd.randrange(5000)}@example.test"
                    sender = f"s{rnd.randrange(10**5)}@spam{rnd.randrange(100)}.example"
                    reply = REJECTS[1 if roll < 0.08 else rnd.randrange(len(REJECTS))]
                    reply = reply.format(ip=ip, rcpt=rcpt, helo=helo, sender=sender)
                    log.line("smtpd", f"NOQUEUE: reject: RCPT from {client}: {reply}; "
                                      f"from=<{sender}> to=<{rcpt}> proto=ESMTP helo=<{helo}>")
                log.line("smtpd", f"disconnect from {client} ehlo=1 mail=1 rcpt=0/1 quit=1 "
                                  "commands=3/4")
                continue
            qseq += 1
            qid = f"{qseq:010X}"
            sender = f"news{rnd.randrange(300)}@sender{rnd.randrange(50)}.example"
            rcpts = [f"user{rnd.randrange(200)}@example.test" for _ in range(rnd.randrange(1, 3))]
            log.line("smtpd", f"{qid}: client={client}")
            log.line("cleanup", f"{qid}: message-id=<{qid}@sender.example>")
            log.line("qmgr", f"{qid}: from=<{sender}>, size={rnd.randrange(800, 90000)}, "
                             f"nrcpt={len(rcpts)} (queue active)")
            for rcpt in rcpts:
                fate = rnd.random()
                base = f"{qid}: to=<{rcpt}>, relay=lmtp.example.test[192.0.2.25]:24, "
                if fate < 0.05:
                    log.line("lmtp", base + "delay=0.3, delays=0.1/0/0.1/0.1, dsn=4.2.0, "
                             "status=deferred (host said: 452 4.2.2 Mailbox full)")
                if fate < 0.02:
                    log.line("lmtp", base + "delay=0.3, delays=0.1/0/0.1/0.1, dsn=5.1.1, "
                             "status=bounced (host said: 550 5.1.1 User unknown)")
                else:
                    log.line("lmtp", base + "delay=0.2, delays=0.1/0/0.05/0.05, dsn=2.0.0, "
                             "status=sent (250 2.0.0 Ok)")
            log.line("qmgr", f"{qid}: removed")
            log.line("smtpd", f"disconnect from {client} ehlo=1 mail=1 rcpt={len(rcpts)} "
                              "data=1 quit=1 commands=5")


def measure(args: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MiB, stdout) of one command."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{args[0]} failed with status {proc.returncode}")
        out.seek(0)
        return wall, usage.ru_maxrss // 1024, out.read().decode("utf-8", "replace")


def units(value: int) -> str:
    """pflogsumm's adj_int_units(): 724k for 742229 (its totals past 512k / 512m)."""
    if value > 536870912:
        return f"{value // 1048576}m"
    return f"{value // 1024}k" if value > 524288 else str(value)


def totals(text: str, pflogsumm: bool = False) -> dict[str, str]:
    """Grand totals as printed; mailgate's exact counts in pflogsumm's units for comparing."""
    found = {}
    for name in TOTALS:
        m = re.search(rf"^\s+(\d+)([km]?)\s+{name}\b", text, re.M)
        found[name] = (m.group(1) + m.group(2) if pflogsumm else units(int(m.group(1)))) \
            if m else "?"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--lines", type=int, default=1_000_000)
    parser.add_argument("--log", help="use (or keep) the generated log at this path")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reportbench."))
    log = Path(args.log) if args.log else tmp / "maillog"
    try:
        if not log.exists():
            t = time.perf_counter()
            generate(log, args.lines)
            print(f"generated {args.lines:,} lines ({log.stat().st_size / 2**20:.0f} MiB) in "
                  f"{time.perf_counter() - t:.1f} s")
        one, one_rss, _ = measure([sys.executable, "-m", "mailgate.cli", "report", "--jobs", "1",
                                   str(log)])
        print(f"mailgate report --jobs 1: {one:6.2f} s  peak RSS {one_rss:4d} MiB")
        wall, rss, text = measure([sys.executable, "-m", "mailgate.cli", "report", str(log)])
        print(f"mailgate report:          {wall:6.2f} s  peak RSS {rss:4d} MiB (largest process; "
              f"{os.cpu_count()} cores)  {totals(text)}")
        pflogsumm = shutil.which("pflogsumm")
        if pflogsumm is None:
            print("pflogsumm not installed: no comparison")
            return 0
        pwall, prss, ptext = measure([pflogsumm, str(log)])
        print(f"pflogsumm:                {pwall:6.2f} s  peak RSS {prss:4d} MiB  "
              f"{totals(ptext, pflogsumm=True)}")
        print(f"time ratio mailgate/pflogsumm: {wall / pwall:.2f}x (target <= 0.5x), one "
              f"process {one / pwall:.2f}x; "
              f"totals {'agree' if totals(text) == totals(ptext, True) else 'DIFFER'}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
