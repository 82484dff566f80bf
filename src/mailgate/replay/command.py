"""`mailgate replay`: reads journals (or Postfix logs) a block at a time, replays the blocks
in one process per core, and prints the report (text, `--html`, or `--json` lines).

Blocks go to the processes through a window of a few per process and come back in order,
so memory stays flat whatever the size of the input; progress shows on a terminal. A block
of a plain journal file is only its byte range: the process replaying it reads it, and
sends back the block's counts (and JSON lines), never a line per recipient.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TextIO

from mailgate.config.config import Config
from mailgate.journal.record import encode
from mailgate.replay import render
from mailgate.replay.postfixlog import PostfixLog
from mailgate.replay.replayer import Options, Part, Replayer
from mailgate.replay.summary import Summary
from mailgate.report import reading
from mailgate.report.command import Progress
from mailgate.report.logline import parse_bound

INLINE = 4 << 20  # bytes of input below which the replay runs in this process only
BLOCK = 2000  # transactions of a Postfix log sent to a process at a time
RANGE = reading.BATCH  # bytes of a plain journal file replayed by a process at a time
WINDOW = 3  # blocks in flight per process

# A block: journal lines, or (file, start, end) for the lines that start in that byte range.
Block = list[str] | tuple[str, int, int]

_replayer: Replayer | None = None  # a worker process's (made by _start)
_setup: tuple[Config, Options] | None = None  # what the forked workers build it from


def _start() -> None:
    global _replayer
    assert _setup is not None
    gc.disable()  # records make no reference cycles; collections would cost time
    _replayer = Replayer(*_setup)


def _replay(block: Block) -> Part:
    assert _replayer is not None
    if isinstance(block, list):
        return _replayer.lines(block)
    name, start, end = block
    lines: list[str] = []
    for batch in reading.range_batches(name, start, end, lambda n: None):
        lines += batch
    return _replayer.lines(lines)


def _ordered(pool: ProcessPoolExecutor, blocks: Iterator[Block], window: int,
             moved: Callable[[int], None]) -> Iterator[Part]:
    """The parts of the blocks, in order, with at most `window` blocks in flight; a byte
    range counts as read when its part is back."""
    pending: deque[tuple[Future[Part], int]] = deque()
    for block in blocks:
        size = block[2] - block[1] if isinstance(block, tuple) else 0
        pending.append((pool.submit(_replay, block), size))
        if len(pending) >= window:
            future, size = pending.popleft()
            yield future.result()
            moved(size)
    while pending:
        future, size = pending.popleft()
        yield future.result()
        moved(size)


def _ranged(name: str) -> bool:
    """A regular file, not gzip'd: its byte ranges can be read by the processes."""
    try:
        return name != "-" and stat.S_ISREG(os.stat(name).st_mode) and reading.splittable(name)
    except OSError:
        return False  # (reading it says why)


def _journal_blocks(names: list[str], moved: Callable[[int], None],
                    ranges: bool) -> Iterator[Block]:
    """The journals' lines a block at a time; with `ranges`, a plain file's blocks as byte
    ranges (its size now: lines written later are not replayed)."""
    for name in names:
        if ranges and _ranged(name):
            size = os.path.getsize(name)
            yield from ((name, start, min(start + RANGE, size))
                        for start in range(0, size, RANGE))
        else:
            yield from reading.batches(name, moved)


def _log_blocks(names: list[str], moved: Callable[[int], None]) -> Iterator[list[str]]:
    """A Postfix log's transactions, as journal lines."""
    parser = PostfixLog()
    block: list[str] = []
    for name in names:
        for lines in reading.batches(name, moved):
            for tx in parser.consume(lines):
                block.append(encode(tx))
                if len(block) >= BLOCK:
                    yield block
                    block = []
    block += [encode(tx) for tx in parser.done()]
    if block:
        yield block


def _parts(cfg: Config, options: Options, blocks: Iterator[Block], jobs: int,
           moved: Callable[[int], None]) -> Iterator[Part]:
    global _setup
    if jobs <= 1:
        replayer = Replayer(cfg, options)
        gc.disable()  # as in the workers
        try:
            for block in blocks:
                assert isinstance(block, list)
                yield replayer.lines(block)
        finally:
            gc.enable()
            replayer.close()
        return
    _setup = (cfg, options)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start) as pool:
        try:
            yield from _ordered(pool, blocks, WINDOW * jobs, moved)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run(cfg: Config, config_dir: str, names: list[str], *, postfix_log: bool = False,
        since: str | None = None, until: str | None = None, html_path: str | None = None,
        json_out: bool = False, live_dns: bool = False, jobs: int = 0, top: int = 10,
        out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Replay the journals (Postfix logs) against `cfg`; 0, or 2 on bad arguments or input."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        options = Options(live_dns, json_out,
                          parse_bound(since).timestamp() if since else None,
                          parse_bound(until).timestamp() if until else None)
        sizes = [os.path.getsize(n) if n != "-" else 0 for n in names]
    except (ValueError, OSError) as exc:
        print(f"mailgate replay: {exc}", file=err)
        return 2
    progress = Progress(sum(sizes), err)
    read = 0

    def moved(n: int) -> None:
        nonlocal read
        read += n

    workers = jobs or (os.cpu_count() or 1)
    if sum(sizes) < INLINE and "-" not in names:
        workers = 1
    blocks = _log_blocks(names, moved) if postfix_log else \
        _journal_blocks(names, moved, workers > 1)
    summary, bad = Summary(), 0
    try:
        for part in _parts(cfg, options, blocks, workers, moved):
            summary.merge(part.summary)
            bad += part.bad
            if json_out and part.text:
                out.write(part.text)
            progress.show(read)
    except OSError as exc:
        progress.end()
        print(f"mailgate replay: {exc}", file=err)
        return 2
    progress.end()
    if bad:
        print(f"mailgate replay: warning: {bad} lines are not journal records "
              f"(version 1): skipped", file=err)
    if not json_out:
        out.write(render.text(summary, config_dir, top))
    if html_path:
        Path(html_path).write_text(render.html(summary, config_dir, top), encoding="utf-8")
    return 0
