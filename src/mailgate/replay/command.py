"""`mailgate replay`: reads journals (or Postfix logs) a block at a time, replays the blocks
in one process per core, and prints the report (text, `--html`, or `--json` lines).

Blocks go to the processes through a window of a few per process and come back in order,
so memory stays flat whatever the size of the input; progress shows on a terminal.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
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
WINDOW = 3  # blocks in flight per process

_replayer: Replayer | None = None  # a worker process's (made by _start)
_setup: tuple[Config, Options] | None = None  # what the forked workers build it from


def _start() -> None:
    global _replayer
    assert _setup is not None
    gc.disable()  # records make no reference cycles; collections would cost time
    _replayer = Replayer(*_setup)


def _replay(lines: list[str]) -> Part:
    assert _replayer is not None
    return _replayer.lines(lines)


def _ordered(pool: ProcessPoolExecutor, blocks: Iterator[list[str]],
             window: int) -> Iterator[Part]:
    """The parts of the blocks, in order, with at most `window` blocks in flight."""
    pending: deque[Future[Part]] = deque()
    for block in blocks:
        pending.append(pool.submit(_replay, block))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _journal_blocks(names: list[str], moved: Callable[[int], None]) -> Iterator[list[str]]:
    for name in names:
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


def _parts(cfg: Config, options: Options, blocks: Iterator[list[str]], jobs: int
           ) -> Iterator[Part]:
    global _setup
    if jobs <= 1:
        replayer = Replayer(cfg, options)
        gc.disable()  # as in the workers
        try:
            for block in blocks:
                yield replayer.lines(block)
        finally:
            gc.enable()
            replayer.close()
        return
    _setup = (cfg, options)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start) as pool:
        try:
            yield from _ordered(pool, blocks, WINDOW * jobs)
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

    source = _log_blocks if postfix_log else _journal_blocks
    workers = jobs or (os.cpu_count() or 1)
    if sum(sizes) < INLINE and "-" not in names:
        workers = 1
    summary, bad = Summary(), 0
    try:
        for part in _parts(cfg, options, source(names, moved), workers):
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
