"""Group commit for directory fsyncs: one fsync covers every rename that happened before it."""

from __future__ import annotations

import os
import threading


class DirectorySync:
    """`sync(path)` returns once `path` was fsync'd after the call started.

    Concurrent callers (worker threads) share one fsync instead of each issuing their own.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state: dict[str, tuple[int, int, bool]] = {}  # path -> requested, done, running

    def sync(self, path: str) -> None:
        with self._cond:
            requested, done, running = self._state.get(path, (0, 0, False))
            ticket = requested + 1
            self._state[path] = (ticket, done, running)
            while True:
                requested, done, running = self._state[path]
                if done >= ticket:
                    return
                if not running:
                    self._state[path] = (requested, done, True)
                    target = requested
                    self._cond.release()
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                    finally:
                        self._cond.acquire()
                        requested, done, _ = self._state[path]
                        self._state[path] = (requested, max(done, target), False)
                        self._cond.notify_all()
                else:
                    self._cond.wait()
