"""Delivery to Maildir (virtual(8)/local(8) semantics): tmp/ → new/, fsync, idempotent names."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from mailgate.delivery.agent import DeliveryRequest, DeliveryResult, Status
from mailgate.privileges import file_identity
from mailgate.queue.durable import DurableRenamer


def maildir_name(request: DeliveryRequest, hostname: str) -> str:
    """A unique file name that a retry of the same delivery reproduces exactly.

    `<arrival seconds>.Q<queue id>R<recipient index>.<host>`: unique because queue ids are
    unique while the message is queued, and the same for every attempt of one delivery, so a
    delivery repeated after a crash finds its earlier copy instead of writing a second one.
    """
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{int(request.arrival)}.Q{request.queue_id}R{request.index}.{host}"


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def maildir_dsn(err: int | None, default: str) -> str:
    """Postfix's mbox_dsn() (global/mbox_open.c), except that a full mailbox (EDQUOT, EFBIG:
    Postfix 5.2.2) is 4.2.2 here: every Maildir failure defers (decision 0038)."""
    if err in (errno.EAGAIN, errno.ESTALE):
        return "4.2.0"
    if err == errno.ENOSPC:
        return "4.3.0"
    if err in (errno.EDQUOT, errno.EFBIG):
        return "4.2.2"
    return default


def _already_delivered(maildir: Path, name: str) -> bool:
    if (maildir / "new" / name).exists():
        return True
    cur = maildir / "cur"
    try:
        return any(entry.split(":", 1)[0] == name for entry in os.listdir(cur))
    except FileNotFoundError:
        return False


def _make_maildir(maildir: Path, uid: int, gid: int) -> None:
    if (maildir / "tmp").is_dir():
        return
    created = [p for p in (maildir, *maildir.parents) if not p.exists()]
    for path in (maildir, *maildir.parents):  # root creates: no link a user could have made
        if path.is_symlink() and path.parent.lstat().st_uid != 0:
            raise OSError(errno.EPERM, f"symbolic link {path} in a directory not owned by "
                          "root")
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if uid >= 0 or gid >= 0:
        for path in [*created, maildir / "tmp", maildir / "new", maildir / "cur"]:
            os.chown(path, uid, gid)


class MaildirAgent:
    """The `virtual` or `local` transport writing to Maildirs; `nexthop` is the Maildir path.

    The file is created and written, fsync'd, renamed into new/ and its directory fsync'd in
    the DurableRenamer's batch thread: the event loop never waits for the file system.
    """

    direct = True  # fast and local: smtpd may deliver before `250` (decision 0047)

    def __init__(self, name: str, hostname: str, renamer: DurableRenamer,
                 fsync: bool = True, as_owner: bool = False) -> None:
        self.name = name
        self.hostname = hostname
        self.fsync = fsync
        self.renamer = renamer
        # as_owner: a root process writes with the owner's file system identity (the
        # delivery helper, decision 0059); else it writes and then gives the file away
        self.as_owner = as_owner

    def _headers(self, request: DeliveryRequest) -> bytes:
        lines = [f"Return-Path: <{request.sender}>\n"]
        if request.original_recipient:
            lines.append(f"X-Original-To: {request.original_recipient}\n")
        lines.append(f"Delivered-To: {request.recipient}\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _failed(self, dsn: str, text: str) -> DeliveryResult:
        """virtual(8)'s texts; always a deferral (the Maildir is the administrator's: a full,
        read-only or failing file system is retried, never bounced at once)."""
        return DeliveryResult(Status.DEFERRED, dsn, f"maildir delivery failed: {text}",
                              self.name)

    def _create_failed(self, path: str, exc: OSError) -> DeliveryResult:
        return self._failed(maildir_dsn(exc.errno, "4.2.0"),
                            f"create maildir file {path}: {exc.strerror}")

    def _write_failed(self, exc: OSError) -> DeliveryResult:
        """mail_copy()'s write or fsync error (Postfix: 5.3.0 unless mbox_dsn() says 4.x)."""
        return self._failed(maildir_dsn(exc.errno, "4.3.0"),
                            f"error writing message: {exc.strerror}")

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        maildir = request.nexthop
        name = maildir_name(request, self.hostname)
        tmp = f"{maildir}/tmp/{name}"
        try:
            if request.recovered and _already_delivered(Path(maildir), name):
                return DeliveryResult(Status.SENT, "2.0.0", "delivered to maildir", self.name)
        except OSError as exc:
            return self._create_failed(tmp, exc)
        new = f"{maildir}/new/{name}"
        try:  # create, write, fsync, rename into new/, fsync new/: all in the batch thread
            await self.renamer.commit_new(lambda: self._write(request, tmp), tmp, new,
                                          self.fsync, ident=(request.uid, request.gid)
                                          if self.as_owner else None)
        except _CreateFailed as exc:
            return self._create_failed(tmp, exc.cause)
        except _WriteFailed as exc:
            return self._write_failed(exc.cause)
        except OSError as exc:
            # The fsync, rename and directory fsync run together in the batch thread; a
            # file written to new/ before its directory fsync failed is found by the retry.
            _remove(tmp)
            if exc.errno in _WRITE_ERRORS:
                return self._write_failed(exc)
            return self._create_failed(new, exc)
        return DeliveryResult(Status.SENT, "2.0.0", "delivered to maildir", self.name)

    def _write(self, request: DeliveryRequest, tmp: str) -> int:
        """Create and write the file in tmp/ (run in the batch thread); its descriptor."""
        try:
            try:
                fd = os.open(tmp, _CREATE, 0o600)
            except FileNotFoundError:  # a new Maildir (the open is the existence check)
                with file_identity(0, 0) if self.as_owner else contextlib.nullcontext():
                    _make_maildir(Path(request.nexthop), request.uid, request.gid)
                fd = os.open(tmp, _CREATE, 0o600)
        except OSError as exc:
            raise _CreateFailed(exc) from exc
        try:
            if not self.as_owner and (request.uid >= 0 or request.gid >= 0):
                os.fchown(fd, request.uid, request.gid)
            head = self._headers(request)
            content = request.content
            done = os.writev(fd, (head, content))  # one call, no joined copy
            if done < len(head) + len(content):
                view = memoryview(head + content)[done:]
                while view:
                    view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            _remove(tmp)  # as virtual(8): the partial copy goes, it never reaches new/
            raise _WriteFailed(exc) from exc
        return fd


class _Failed(OSError):
    """A step of _write() failed: `cause` is the error itself."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.cause = cause


class _CreateFailed(_Failed):
    pass


class _WriteFailed(_Failed):
    pass


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # gone already, or
        pass  # a read-only file system: nothing was written there either
