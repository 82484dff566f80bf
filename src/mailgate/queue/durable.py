"""Durable renames in batches: fsync files, rename them into place, fsync their directories.

The event loop writes a file (page cache, microseconds) and hands the open descriptor to
`DurableRenamer.commit()`, or hands over a function that creates and writes it
(`commit_new()`: creating a file allocates an inode, which can cost a millisecond of kernel
time, off the event loop then). One worker thread takes every pending commit at once, fsyncs
each file, renames it, fsyncs each directory once, and wakes the loop once for the whole
batch: group commit, with one thread hop per batch instead of several per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.privileges import file_identity


@dataclass
class _Op:
    fd: int
    src: str
    dst: str
    fsync: bool
    close: bool
    future: asyncio.Future[None]
    error: OSError | None = field(default=None)
    write: Callable[[], int] | None = None  # creates and writes `src`; returns its fd
    ident: tuple[int, int] | None = None  # the file system uid:gid for write and rename


class DurableRenamer:
    """Owns one worker thread; `commit()` is awaited by any number of coroutines."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._cond = threading.Condition()
        self._pending: list[_Op] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="mailgate-fsync", daemon=True)
        self._thread.start()

    async def commit(self, fd: int, src: str, dst: str, fsync: bool = True,
                     close: bool = True) -> None:
        """fsync `fd` and close it (unless `close` is false: the caller keeps it), rename
        `src` to `dst`, fsync `dst`'s directory.

        Raises OSError if any step failed (the caller then still owns the file at `src`).
        """
        future: asyncio.Future[None] = self.loop.create_future()
        with self._cond:
            self._pending.append(_Op(fd, src, dst, fsync, close, future))
            self._cond.notify()
        await future

    async def commit_new(self, write: Callable[[], int], src: str, dst: str,
                         fsync: bool = True, ident: tuple[int, int] | None = None) -> None:
        """As commit(), for a file that `write` creates at `src` and writes, in the batch
        thread; `write` returns the open descriptor (closed here) or raises OSError, which
        reaches the caller unchanged. `ident`: write and rename with that uid:gid's file
        system rights (a root delivery process writing a user's mailbox)."""
        future: asyncio.Future[None] = self.loop.create_future()
        with self._cond:
            self._pending.append(_Op(-1, src, dst, fsync, True, future, write=write,
                                     ident=ident))
            self._cond.notify()
        await future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            dirs: dict[str, list[_Op]] = {}
            for op in batch:
                try:
                    with file_identity(*op.ident) if op.ident else contextlib.nullcontext():
                        _apply(op)
                    if op.fsync:
                        dirs.setdefault(os.path.dirname(op.dst), []).append(op)
                except Exception as exc:  # never lets the thread die: every op is answered
                    op.error = exc if isinstance(exc, OSError) else OSError(errno.EIO, repr(exc))
                    if op.fd >= 0:
                        with contextlib.suppress(OSError):
                            os.close(op.fd)
                        op.fd = -1
            for directory, ops in dirs.items():
                try:
                    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    for op in ops:
                        op.error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                self.loop.call_soon_threadsafe(_resolve, batch)


def _apply(op: _Op) -> None:
    if op.write is not None:
        op.fd = op.write()
    if op.fsync:
        os.fsync(op.fd)
    if op.close:
        os.close(op.fd)
    op.fd = -1
    os.rename(op.src, op.dst)


def _resolve(batch: list[_Op]) -> None:
    for op in batch:
        if op.future.done():
            continue
        if op.error is not None:
            op.future.set_exception(op.error)
        else:
            op.future.set_result(None)
