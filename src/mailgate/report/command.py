"""`mailgate report`: reads plain and gzip'd logs (files or stdin), shows progress on a terminal,
prints the text report and writes the HTML page."""

from __future__ import annotations

import gc
import gzip
import io
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from mailgate.report import html, text
from mailgate.report.logline import Clock, parse_bound
from mailgate.report.summary import Summary

_BATCH = 1 << 20  # bytes of lines read at a time


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.shown = self.stream.isatty()

    def show(self, done: int, lines: int) -> None:
        if not self.shown:
            return
        if self.total:
            part = min(done / self.total, 1.0)
            bar = "#" * int(part * 30)
            self.stream.write(f"\r[{bar:<30}] {part:4.0%} {lines:,} lines")
        else:
            self.stream.write(f"\r{lines:,} lines")
        self.stream.flush()

    def end(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _open(name: str) -> tuple[TextIO, BinaryIO]:
    """A text stream over a log (gzip'd or not, by its magic) and the raw byte stream under it
    (whose position measures progress)."""
    raw = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        unzipped = gzip.GzipFile(fileobj=buffered)
        return io.TextIOWrapper(unzipped, encoding="utf-8", errors="replace"), buffered
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="replace"), buffered


def _position(raw: BinaryIO) -> int:
    try:
        return raw.tell()
    except OSError:  # a pipe
        return 0


def batches(names: list[str], progress: Progress) -> Iterator[list[str]]:
    """The lines of every input, in order, about a megabyte at a time (a list per batch keeps
    the per-line loop in Summary.consume, not in a generator), with progress updates."""
    done = 0  # bytes of the inputs already read
    count = 0
    for name in names:
        stream, raw = _open(name)
        try:
            while True:
                batch = stream.readlines(_BATCH)
                if not batch:
                    break
                count += len(batch)
                yield batch
                progress.show(done + _position(raw), count)
        finally:
            done += _position(raw)
            if name != "-":
                stream.close()


def run(names: list[str], since: str | None = None, until: str | None = None,
        html_path: str | None = None, top: int = 10, threshold: int = 5, spread: int = 3,
        now: datetime | None = None, out: TextIO | None = None) -> int:
    """Summarize the logs; print the text report (and write the HTML page). 0, or 2 on a
    bad argument or unreadable input."""
    out = out or sys.stdout
    names = names or ["-"]
    try:
        summary = Summary(Clock(now), parse_bound(since) if since else None,
                          parse_bound(until) if until else None)
        sizes = sum(os.path.getsize(n) for n in names if n != "-")
    except (ValueError, OSError) as exc:
        print(f"mailgate report: {exc}", file=sys.stderr)
        return 2
    progress = Progress(sizes)
    gc.disable()  # the summary makes no reference cycles; collections would cost 10 %
    try:
        for batch in batches(names, progress):
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
    if html_path:
        Path(html_path).write_text(html.render(summary, findings, top), encoding="utf-8")
    return 0
