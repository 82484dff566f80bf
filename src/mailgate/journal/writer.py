"""The journal file: records of one event-loop iteration written with one write(), bounded
by transaction_journal_size_limit, reopened when the mail log is (`mailgate postlog reopen`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

MODE = 0o640


def create(path: str) -> None:
    """Make the journal file if it is missing (the master, before it hands the file to
    mail_owner, as it does for maillog_file)."""
    if path:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, MODE))


class JournalFile:
    """Appends lines to `path`. Lines added while an event loop runs are written together
    at the end of its iteration (several workers append to one file: each write() is whole
    lines). At `limit` bytes (0: none) the file takes no more: the lines are dropped, with
    one warning, until a reopen finds a smaller file (log rotation)."""

    def __init__(self, path: str, limit: int, warn: Callable[[str], None]) -> None:
        self.path = path
        self.limit = limit
        self.warn = warn
        self.dropped = 0  # lines not written since the file is full
        self._fd: int | None = None
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self.reopen()

    def batch_in(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Inside an event loop, write the lines of one loop iteration with one write()."""
        self._loop = loop

    def add(self, line: str) -> None:
        self._pending.append(line)
        if self._loop is None:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._fd is None:  # (could not be opened: warned)
            self._pending.clear()
        if not self._pending or self._fd is None:
            return
        data = "".join(self._pending).encode("utf-8", "surrogateescape")
        lines = len(self._pending)
        self._pending.clear()
        if self.limit:
            try:
                size = os.fstat(self._fd).st_size
            except OSError:
                size = 0
            if size + len(data) > self.limit:
                if not self.dropped:
                    self.warn(f"transaction journal {self.path} has reached "
                              f"transaction_journal_size_limit ({self.limit} bytes): "
                              "records are dropped until it is rotated")
                self.dropped += lines
                return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.warn(f"transaction journal {self.path}: write: {exc.strerror}")

    def reopen(self) -> None:
        """Open (again) the journal file; one that cannot be opened keeps the one there is
        (none at start-up: the journal is off, with a warning)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, MODE)
        except OSError as exc:
            self.warn(f"cannot open transaction journal {self.path}: {exc.strerror}")
            return
        self.flush()
        old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)
        if self.dropped:
            self.warn(f"transaction journal {self.path}: {self.dropped} records were "
                      "dropped while it was full")
            self.dropped = 0

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
