"""Tables: build a 1,000,000-line access table with mailgate's and Postfix's postmap, then time
100,000 in-process access lookups (full lookup-order walk: address, domain and parents, user@)
and the resident memory an opened table costs.
Usage: bench/maps [-n LINES] [-k KEYS]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailgate.maps import default_registry  # noqa: E402
from mailgate.maps.access import address_keys, host_keys  # noqa: E402
from mailgate.maps.addr_find import lookup_keys  # noqa: E402
from mailgate.maps.base import Map  # noqa: E402

# check_*_access's strategy for e-mail addresses (engine/access.py)
_ACCESS = frozenset({"full", "noext", "domain", "localpart_at", "pdms"})


def _walk(table: Map, keys: Iterator[tuple[str, bool]]) -> str | None:
    """The access lookup order as engine/access.py walks it (partial keys only for fixed
    tables)."""
    for key, partial in keys:
        if partial and not table.fixed:
            continue
        value = table.lookup(key)
        if value is not None:
            return value
    return None


def find_email(table: Map, address: str) -> str | None:
    keys = lookup_keys(table.fixed, address, _ACCESS, "external-first", "+")
    return _walk(table, ((key, False) for key, _ in keys))


def find_client(table: Map, name: str, addr: str) -> str | None:
    return _walk(table, itertools.chain(host_keys(name), address_keys(addr)))


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def make_source(path: Path, lines: int, rng: random.Random) -> None:
    with path.open("w") as f:
        for i in range(lines):
            kind = i % 4
            if kind == 0:
                f.write(f"user{i}@dom{rng.randrange(20000)}.example\tREJECT user {i}\n")
            elif kind == 1:
                f.write(f"dom{i}.example\tREJECT domain {i}\n")
            elif kind == 2:
                f.write(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}\t"
                        f"REJECT net {i}\n")
            else:
                f.write(f"spam{i}@\tDUNNO {i}\n")


def timed(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--lines", type=int, default=1_000_000)
    parser.add_argument("-k", "--keys", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="mailgate-maps-") as tmp:
        ours, theirs = Path(tmp) / "ours", Path(tmp) / "theirs"
        ours.mkdir()
        theirs.mkdir()
        make_source(ours / "access", args.lines, rng)
        (theirs / "access").write_bytes((ours / "access").read_bytes())
        (theirs / "main.cf").write_text("")
        python = ROOT / ".venv" / "bin" / "python"
        mg = timed([str(python if python.exists() else sys.executable), "-m", "mailgate.cli",
                    "postmap", f"hash:{ours / 'access'}"])
        print(f"build {args.lines} lines: mailgate {mg:.2f} s", end="")
        if Path("/usr/sbin/postmap").exists():
            pf = timed(["/usr/sbin/postmap", "-c", str(theirs), f"hash:{theirs / 'access'}"])
            print(f", postfix {pf:.2f} s, ratio {mg / pf:.2f}x")
        else:
            print()
        before = rss_kb()
        table = default_registry().open(f"hash:{ours / 'access'}")
        table.lookup("warm-up")
        opened = rss_kb() - before
        keys = []
        for i in range(args.keys):
            kind = i % 4
            if kind == 0:
                keys.append(("mail", f"user{rng.randrange(args.lines)}@sub.dom"
                                     f"{rng.randrange(40000)}.example"))
            elif kind == 1:
                keys.append(("mail", f"spam{rng.randrange(args.lines)}@x.example"))
            elif kind == 2:
                keys.append(("client", f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                                       f"{rng.randrange(256)}.{rng.randrange(256)}"))
            else:
                keys.append(("mail", f"nobody{i}@nowhere{i}.example"))
        lat = []
        hits = 0
        for kind, key in keys:
            start = time.perf_counter_ns()
            found = (find_email(table, key) if kind == "mail"
                     else find_client(table, "unknown", key))
            lat.append(time.perf_counter_ns() - start)
            hits += found is not None
        lat.sort()
        print(f"lookups: {len(keys)} (hits {hits}), full lookup-order walk: median "
              f"{statistics.median(lat) / 1000:.1f} us, p99 {lat[int(len(lat) * .99)] / 1000:.1f}"
              f" us")
        print(f"RSS growth for opening the {args.lines}-entry table: {opened / 1024:.1f} MB "
              f"(after all lookups: {(rss_kb() - before) / 1024:.1f} MB, file-backed pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
