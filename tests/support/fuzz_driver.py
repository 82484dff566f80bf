"""The long-mode fuzzer behind scripts/fuzz: seeded random and mutational inputs for every
target, spread over worker processes; a table of inputs, inputs/s and crashes per target.

An input is a crash when the target raises (an invariant check or an escaped exception) or
runs longer than --timeout seconds. Crashing inputs go to --crash-dir as TARGET-SIG-N.bin
with the traceback beside them in .txt; the exit status is 1 when there was any.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import resource
import signal
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

# run as a script, sys.path[0] is tests/support, whose dns.py would hide dnspython
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # tests/, for `support`

from support.fuzz_tables import TABLE_TARGETS
from support.fuzz_targets import TARGETS
from support.fuzzing import Target, next_input

ALL: dict[str, Target] = {t.name: t for t in TARGETS + TABLE_TARGETS}
KEEP = 3  # crashing inputs kept per signature and chunk


class Hang(Exception):
    """The input ran longer than the timeout."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def signature(name: str, exc: BaseException) -> str:
    """Target, exception type and the innermost frame: one bug, one signature."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{name}:{type(exc).__name__}:{where}"


def work(job: tuple[str, int, int, int, float]) -> tuple[str, int, float, list[tuple[str, str, bytes]]]:
    """Run one chunk: (target, chunk number, count, seed, timeout) → (target, count, CPU
    seconds, crashes as (signature, traceback, input))."""
    name, chunk, count, seed, timeout = job
    target = ALL[name]
    rng = random.Random(f"{seed}:{name}:{chunk}")
    signal.signal(signal.SIGALRM, _alarm)
    crashes: list[tuple[str, str, bytes]] = []
    seen: dict[str, int] = defaultdict(int)
    started = time.process_time()
    for _ in range(count):
        data = next_input(target, rng)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            target.run(data)
        except (Exception, Hang) as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sig = signature(name, exc)
            seen[sig] += 1
            if seen[sig] <= KEEP:
                crashes.append((sig, "".join(traceback.format_exception(exc))[-4000:], data))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return name, count, time.process_time() - started, crashes


def jobs(names: list[str], total: int, chunk: int, seed: int,
         timeout: float) -> Iterator[tuple[str, int, int, int, float]]:
    """Chunks of every target, interleaved, so a stopped run has covered them all."""
    per = total // len(names)
    quota = {n: per + (1 if i < total % len(names) else 0) for i, n in enumerate(names)}
    number = 0
    while any(quota.values()):
        for n in names:
            take = min(chunk, quota[n])
            if take:
                quota[n] -= take
                yield n, number, take, seed, timeout
        number += 1


def table(names: list[str], done: dict[str, int], cpu: dict[str, float],
          crashes: dict[str, int], wall: float) -> str:
    rows = [f"{'target':<18} {'inputs':>11} {'inputs/s':>10} {'crashes':>8}"]
    for n in names:
        rate = done[n] / cpu[n] if cpu[n] else 0.0
        rows.append(f"{n:<18} {done[n]:>11,} {rate:>10,.0f} {crashes[n]:>8}")
    total = sum(done.values())
    rows.append(f"{'total':<18} {total:>11,} {total / wall if wall else 0:>10,.0f} "
                f"{sum(crashes.values()):>8}   ({wall:,.0f} s wall)")
    return "\n".join(rows)


def save(crash_dir: Path, sig: str, text: str, data: bytes) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(sig.encode()).hexdigest()[:10]
    name = sig.split(":", 1)[0]
    n = sum(1 for _ in crash_dir.glob(f"{name}-{digest}-*.bin"))
    if n < 10:
        (crash_dir / f"{name}-{digest}-{n}.bin").write_bytes(data)
        (crash_dir / f"{name}-{digest}-{n}.txt").write_text(f"{sig}\n{data!r}\n\n{text}")


def _limit_memory(limit: int) -> None:
    """A worker's address space is capped: an allocation past it is a MemoryError (or a C
    library's out-of-memory error), never the machine's OOM killer."""
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


Result = tuple[str, int, float, list[tuple[str, str, bytes]]]


def run_all(args: argparse.Namespace, names: list[str]) -> Iterator[Result]:
    """The chunks' results as they finish, `args.jobs` processes busy. A worker that dies
    (a C-level crash, or the memory cap in C code) is a crash of its chunk's target."""
    units = jobs(names, args.inputs, args.chunk, args.seed, args.timeout)
    stuck = max(120.0, 30 * args.timeout)
    context = multiprocessing.get_context("fork")
    while True:
        with ProcessPoolExecutor(args.jobs, context, _limit_memory, (args.memory << 20,)) as ex:
            running: dict[Future[Result], tuple[str, int, int, int, float]] = {}
            try:
                for unit in units:
                    running[ex.submit(work, unit)] = unit
                    while len(running) >= 2 * args.jobs:
                        yield from _finished(running, ex, stuck)
                while running:
                    yield from _finished(running, ex, stuck)
                return
            except BrokenProcessPool:
                for unit in running.values():  # the dead worker's chunk, and any in flight
                    died = f"{unit[0]}:worker died or hung:chunk {unit[1]}"
                    yield unit[0], 0, 0.0, [(died, f"chunk {unit[1]} of --targets {unit[0]} "
                                             f"--seed {unit[3]}: rerun with --jobs 1", b"")]


def _finished(running: dict[Future[Result], tuple[str, int, int, int, float]],
              ex: ProcessPoolExecutor, stuck: float) -> Iterator[Result]:
    """Results of the chunks that finished. A chunk that takes `stuck` seconds is hung in
    C code (where SIGALRM cannot interrupt it): its worker is killed, which breaks the pool."""
    done, _ = wait(running, timeout=stuck, return_when=FIRST_COMPLETED)
    if not done:
        for process in list(getattr(ex, "_processes", {}).values()):
            process.kill()
        done, _ = wait(running, return_when=FIRST_COMPLETED)
    for future in done:
        result = future.result()  # BrokenProcessPool: the unit stays in `running`
        del running[future]
        yield result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=10_000_000, help="total inputs (default 10^7)")
    p.add_argument("--targets", default="all", help=f"comma list of: {', '.join(ALL)}")
    p.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--crash-dir", default="fuzz-crashes", help="where crashing inputs go")
    p.add_argument("--chunk", type=int, default=5000, help="inputs per work unit")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per input before a hang")
    p.add_argument("--memory", type=int, default=3072, help="MiB of address space per worker")
    p.add_argument("--report-every", type=float, default=60.0, help="progress table period (s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(ALL) if args.targets == "all" else args.targets.split(",")
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(ALL)}", file=sys.stderr)
        return 2
    done: dict[str, int] = dict.fromkeys(names, 0)
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    crashes: dict[str, int] = dict.fromkeys(names, 0)
    sigs: set[str] = set()
    started = last = time.monotonic()
    print(f"fuzz: {args.inputs:,} inputs over {len(names)} targets, seed {args.seed}, "
          f"{args.jobs} processes", flush=True)
    for name, count, seconds, found in run_all(args, names):
        done[name] += count
        cpu[name] += seconds
        for sig, text, data in found:
            crashes[name] += 1
            if sig not in sigs:
                sigs.add(sig)
                print(f"CRASH {sig}: {data[:200]!r}", flush=True)
            save(Path(args.crash_dir), sig, text, data)
        if time.monotonic() - last > args.report_every:
            last = time.monotonic()
            print(table(names, done, cpu, crashes, last - started), "\n", flush=True)
    print(table(names, done, cpu, crashes, time.monotonic() - started), flush=True)
    if sigs:
        print(f"{len(sigs)} distinct crash(es); inputs in {args.crash_dir}/", flush=True)
    return 1 if sigs else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
