"""Log input: plain or gzip'd files and stdin, read as blocks of whole lines (split on `\\n`
only, so that every reader of a log sees the same lines), and byte ranges of plain files for
reading one file in several processes."""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

BATCH = 1 << 20  # bytes read at a time


def _lines(data: bytes) -> list[str]:
    """Whole lines of a block (it ends with a newline), decoded, without their newline."""
    out = data.decode("utf-8", "replace").split("\n")
    out.pop()
    return out


MAGIC = b"\x1f\x8b"  # gzip's


def splittable(name: str) -> bool:
    """A plain file (not stdin, not gzip'd): byte ranges of it can be read by several
    processes."""
    if name == "-":
        return False
    with open(name, "rb") as f:
        return f.read(2) != MAGIC


def _blocks(stream: BinaryIO, limit: int | None = None) -> Iterator[bytes]:
    """Blocks of whole lines from the stream's position; with `limit`, the lines that start
    within the next `limit` bytes (the last one read to its end)."""
    left = limit
    carry = b""
    while left is None or left > 0:
        chunk = stream.read(BATCH if left is None else min(BATCH, left))
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        if limit is not None:
            carry += stream.readline()  # the line that crosses the end is ours
        yield carry if carry.endswith(b"\n") else carry + b"\n"


def batches(name: str, moved: Callable[[int], None]) -> Iterator[list[str]]:
    """The lines of one input (`-`: stdin; gzip recognized by its magic), a block at a time;
    `moved(n)` is told the bytes read (of the file as stored) after each block."""
    raw = cast(io.BufferedReader, sys.stdin.buffer) if name == "-" else open(name, "rb")  # noqa: SIM115
    try:
        stream: BinaryIO = raw
        if raw.peek(2)[:2] == MAGIC:  # stdin too: `zcat` is not needed
            stream = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        position = 0
        for block in _blocks(stream):
            yield _lines(block)
            if raw is not sys.stdin.buffer:
                now = raw.tell()
                moved(now - position)
                position = now
            else:
                moved(len(block))
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def range_batches(name: str, start: int, end: int,
                  moved: Callable[[int], None]) -> Iterator[list[str]]:
    """The lines of a plain file that start at byte offsets in [start, end)."""
    with open(name, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # a line begun before `start` belongs to the range before
        begin = f.tell()
        if begin >= end and start > 0:
            return
        for block in _blocks(f, max(end - begin, 0)):
            moved(len(block))
            yield _lines(block)


def split(names: list[str], sizes: list[int], parts: int) -> list[list[tuple[str, int, int]]]:
    """Up to `parts` contiguous byte ranges over the files in order, each a list of
    (file, start, end) segments."""
    total = sum(sizes)
    step = -(-total // parts)
    out = []
    for k in range(parts):
        low, high = k * step, min((k + 1) * step, total)
        segments = []
        offset = 0
        for name, size in zip(names, sizes, strict=True):
            a, b = max(low, offset), min(high, offset + size)
            if a < b:
                segments.append((name, a - offset, b - offset))
            offset += size
        if segments:
            out.append(segments)
    return out
