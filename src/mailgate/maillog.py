"""The one writer of Postfix-shaped mail log lines (`Mon dd hh:mm:ss host name/prog[pid]: text`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from mailgate.config.config import Config
from mailgate.maps.casefold import printable

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TEXT_LIMIT = 2000  # bytes of one log record's text (msg_logger)
_LEVELS = ("warning: ", "error: ", "fatal: ", "panic: ")  # msg(3) adds these after the cut
_SEVERITY = {"warning: ": 4, "error: ": 3, "fatal: ": 2, "panic: ": 2}  # msg_syslog.c
_FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
               "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
               **{f"local{n}": 16 + n for n in range(8)}}


def _syslog_socket(path: str) -> socket.socket | None:
    """A datagram socket connected to the system logger, or None (then: stderr)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    sock.settimeout(0.1)  # a stalled logger must not stall the server
    return sock


class MailLog:
    """Writes lines in Postfix's syslog shape to `maillog_file` (or stderr).

    `syslog_name` is the program-name prefix (`mailgate` → `mailgate/smtpd[pid]:`); the host
    field is the first label of `myhostname`, as Postfix's postlogd writes it. Each line is
    written with one write() call so that concurrent writers never interleave a line. As
    Postfix's msg(3), every line goes through printable(): control characters and bytes that
    are not UTF-8 (any non-ASCII byte when `utf8`, i.e. smtputf8_enable, is off) become `?`.
    """

    def __init__(self, syslog_name: str, myhostname: str, path: str = "",
                 clock: Callable[[], float] = time.time, stream: TextIO | None = None,
                 utf8: bool = True, syslog: str = "", facility: str = "mail") -> None:
        self.syslog_name = syslog_name
        self.utf8 = utf8
        self.host = myhostname.split(".", 1)[0] or "localhost"
        self.pid = os.getpid()
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._stream: TextIO | None = stream
        self._fd: int | None = None
        self._last_sec = -1
        self._stamp = ""
        self._pending: list[str] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syslog: socket.socket | None = None
        self._facility = _FACILITIES.get(facility.lower(), 2) << 3
        if path:
            self.reopen()
        elif syslog:
            self._syslog = _syslog_socket(syslog)

    @classmethod
    def from_config(cls, cfg: Config, utf8: bool = True) -> MailLog:
        """The log main.cf asks for: maillog_file, or (empty) the system logger on
        syslog_socket (our parameter, /dev/log) with syslog_facility, as Postfix logs;
        stderr when neither can be used."""
        return cls(cfg.get_str("syslog_name"), cfg.get_str("myhostname"),
                   cfg.get_str("maillog_file"), utf8=utf8,
                   syslog=cfg.get_str("syslog_socket"),
                   facility=cfg.get_str("syslog_facility"))

    def _syslog_target(self) -> socket.socket | None:
        return self._syslog

    def batch_in(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Inside an event loop, write the lines of one loop iteration with one write()."""
        self._loop = loop

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._scheduled = False
        if self._pending and self._fd is not None:
            data = "".join(self._pending).encode("utf-8", "surrogateescape")
            self._pending.clear()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]

    def reopen(self) -> None:
        """Open (again) `maillog_file`, for log rotation (`postlog reopen`). A file that
        cannot be opened again (a process that gave up root) keeps the one it has."""
        if not self.path:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            if self._fd is None:
                raise
            self.log("postlogd", f"warning: cannot reopen {self.path}: {exc.strerror}")
            return
        with self._lock:
            self._flush_locked()
            old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._syslog is not None:
                self._syslog.close()
                self._syslog = None

    def _timestamp(self) -> str:
        now = self._clock()
        sec = int(now)
        if sec != self._last_sec:
            t = time.localtime(sec)
            self._stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:" \
                          f"{t.tm_min:02d}:{t.tm_sec:02d}"
            self._last_sec = sec
        return self._stamp

    def log(self, program: str, text: str) -> None:
        """Write one line `text` for `program` (smtpd, cleanup, qmgr, virtual, local, ...)."""
        text = printable(text, self.utf8)
        if len(text) > _TEXT_LIMIT:  # Postfix's logger keeps the first 2000 bytes of a record
            level = text[:text.find(": ") + 2] if text.startswith(_LEVELS) else ""
            text = level + text[len(level):].encode("utf-8", "surrogateescape")[
                :_TEXT_LIMIT].decode("utf-8", "surrogateescape")  # the level is not counted
        target = self._syslog_target()
        if target is not None:  # as glibc's syslog(3) sends it; rsyslog adds the host
            severity = _SEVERITY.get(text[:text.find(": ") + 2], 6) if text[:1] in "wefp" else 6
            data = (f"<{self._facility | severity}>{self._timestamp()} {self.syslog_name}/"
                    f"{program}[{self.pid}]: {text}").encode("utf-8", "surrogateescape")
            with contextlib.suppress(OSError):  # a full or gone logger loses the line
                target.send(data)
            return
        self._emit(f"{self._timestamp()} {self.host} {self.syslog_name}/{program}[{self.pid}]: "
                   f"{text}\n")

    def _emit(self, line: str) -> None:
        if self._fd is not None:
            with self._lock:
                self._pending.append(line)
                if self._loop is None or len(self._pending) > 256:
                    self._flush_locked()
                elif not self._scheduled:
                    self._scheduled = True
                    self._loop.call_soon(self.flush)
        else:
            stream = self._stream or sys.stderr
            stream.write(line)
            stream.flush()

    def warning(self, program: str, text: str) -> None:
        self.log(program, "warning: " + text)

    def named(self, syslog_name: str, utf8: bool) -> MailLog:
        """A log under another syslog_name (a master.cf service's `-o syslog_name=`) that
        writes through this one: same file, same batching, one reopen."""
        if syslog_name == self.syslog_name and utf8 == self.utf8:
            return self
        return _Named(self, syslog_name, utf8)


class _Named(MailLog):
    """MailLog.named(): formats its own lines, hands them to the log it was made from."""

    def __init__(self, parent: MailLog, syslog_name: str, utf8: bool) -> None:
        super().__init__(syslog_name, "localhost", clock=parent._clock, utf8=utf8)
        self.host, self.path, self._parent = parent.host, parent.path, parent

    def _emit(self, line: str) -> None:
        self._parent._emit(line)

    def _syslog_target(self) -> socket.socket | None:
        return self._parent._syslog_target()

    def batch_in(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass  # the parent batches

    def flush(self) -> None:
        self._parent.flush()

    def reopen(self) -> None:
        pass  # the parent owns the file

    def close(self) -> None:
        self._parent.flush()
