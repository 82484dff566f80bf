"""Reads one large plain log in several processes (a byte range each) and merges the parts'
summaries in order: the report of a million lines uses every core, pflogsumm one."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from mailgate.report.reading import range_batches, split
from mailgate.report.summary import Summary

MIN_PART = 8 << 20  # bytes below which another process does not pay for itself
_progress: Any = None  # a shared byte count, inherited by the forked workers


def workers_for(total: int, jobs: int = 0) -> int:
    """How many processes to read `total` bytes of plain files with (1: no split); `jobs`
    caps them (0: one per core, at most 8)."""
    cap = jobs or min(os.cpu_count() or 1, 8)
    return max(1, min(cap, total // MIN_PART))


def _part(segments: list[tuple[str, int, int]], make: Callable[[], Summary]) -> Summary:
    gc.disable()  # see command.run
    summary = make()

    def moved(n: int) -> None:
        with _progress.get_lock():
            _progress.value += n

    for name, start, end in segments:
        for batch in range_batches(name, start, end, moved):
            summary.consume(batch)
    return summary


def summarize(names: list[str], sizes: list[int], workers: int, make: Callable[[], Summary],
              show: Callable[[int], None]) -> Summary:
    """The summary of the files read by `workers` processes; `show(bytes)` while waiting."""
    global _progress
    context = multiprocessing.get_context("fork")
    _progress = context.Value("q", 0)
    parts = split(names, sizes, workers)
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
        futures = [pool.submit(_part, segments, make) for segments in parts]
        while True:
            done, pending = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
            show(_progress.value)
            if not pending or any(f.exception() for f in done):
                break
        summaries = [f.result() for f in futures]
    result = summaries[0]
    for later in summaries[1:]:
        result.merge(later)
    return result
