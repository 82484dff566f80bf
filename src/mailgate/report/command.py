"""`mailgate report`: reads the logs (one process, or several for large plain files), shows
progress on a terminal, prints the text report and writes the HTML page."""

from __future__ import annotations

import functools
import gc
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

from mailgate.config.config import Config
from mailgate.report import html, parallel, reading, state, text
from mailgate.report.logline import Clock, parse_bound
from mailgate.report.summary import Summary


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.shown = self.stream.isatty()

    def show(self, done: int) -> None:
        """`done` bytes of the inputs read (as stored: compressed for gzip'd files)."""
        if not self.shown:
            return
        if self.total:
            part = min(done / self.total, 1.0)
            bar = "#" * int(part * 30)
            self.stream.write(f"\r[{bar:<30}] {part:4.0%} of {self.total / 2**20:,.0f} MiB")
        else:
            self.stream.write(f"\r{done / 2**20:,.0f} MiB read")
        self.stream.flush()

    def end(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _summary(now: datetime | None, since: datetime | None, until: datetime | None) -> Summary:
    return Summary(Clock(now), since, until)


def run(names: list[str], since: str | None = None, until: str | None = None,
        html_path: str | None = None, top: int = 10, threshold: int = 5, spread: int = 3,
        now: datetime | None = None, out: TextIO | None = None, jobs: int = 0,
        cfg: Config | None = None) -> int:
    """Summarize the logs; print the text report (and write the HTML page). 0, or 2 on a
    bad argument or unreadable input. `jobs`: processes for large plain files (0: one per
    core). `cfg` (-c): its shared state (Redis) adds the blocks in force now."""
    out = out or sys.stdout
    names = names or ["-"]
    try:
        bounds = (parse_bound(since) if since else None, parse_bound(until) if until else None)
        sizes = [os.path.getsize(n) if n != "-" else 0 for n in names]
        plain = all(reading.splittable(n) for n in names)
    except (ValueError, OSError) as exc:
        print(f"mailgate report: {exc}", file=sys.stderr)
        return 2
    make = functools.partial(_summary, now, *bounds)
    summary = make()
    progress = Progress(sum(sizes))
    gc.disable()  # the summary makes no reference cycles; collections would cost 10 %
    try:
        workers = parallel.workers_for(sum(sizes), jobs) if plain else 1
        if workers > 1:
            summary = parallel.summarize(names, sizes, workers, make, progress.show)
        else:
            read = 0

            def moved(n: int) -> None:
                nonlocal read
                read += n
                progress.show(read)

            for name in names:
                for batch in reading.batches(name, moved):
                    summary.consume(batch)
    except OSError as exc:
        progress.end()
        print(f"mailgate report: {exc}", file=sys.stderr)
        return 2
    finally:
        gc.enable()
    progress.end()
    summary.done()
    findings = summary.attacks.findings(threshold, spread)
    out.write(text.render(summary, findings, top))
    if cfg is not None:
        out.write(state.render(cfg, top))
    if html_path:
        Path(html_path).write_text(html.render(summary, findings, top), encoding="utf-8")
    return 0
