"""Delivery to Maildir (virtual(8)/local(8) semantics): tmp/ → new/, fsync, idempotent names."""

from __future__ import annotations

import os
from pathlib import Path

from mailgate.delivery.agent import DeliveryRequest, DeliveryResult, Status
from mailgate.queue.durable import DurableRenamer


def maildir_name(request: DeliveryRequest, hostname: str) -> str:
    """A unique file name that a retry of the same delivery reproduces exactly.

    `<arrival seconds>.Q<queue id>R<recipient index>.<host>`: unique because queue ids are
    unique while the message is queued, and the same for every attempt of one delivery, so a
    delivery repeated after a crash finds its earlier copy instead of writing a second one.
    """
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{int(request.arrival)}.Q{request.queue_id}R{request.index}.{host}"


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
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if uid >= 0 or gid >= 0:
        for path in [*created, maildir / "tmp", maildir / "new", maildir / "cur"]:
            os.chown(path, uid, gid)


class MaildirAgent:
    """The `virtual` or `local` transport writing to Maildirs; `nexthop` is the Maildir path.

    The file is written from the event loop (page cache); fsync, the rename into new/ and the
    directory fsync happen in the DurableRenamer's batch thread.
    """

    def __init__(self, name: str, hostname: str, renamer: DurableRenamer,
                 fsync: bool = True) -> None:
        self.name = name
        self.hostname = hostname
        self.fsync = fsync
        self.renamer = renamer

    def _headers(self, request: DeliveryRequest) -> bytes:
        lines = [f"Return-Path: <{request.sender}>\n"]
        if request.original_recipient:
            lines.append(f"X-Original-To: {request.original_recipient}\n")
        lines.append(f"Delivered-To: {request.recipient}\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _failed(self, maildir: Path, exc: OSError) -> DeliveryResult:
        return DeliveryResult(Status.DEFERRED, "4.2.0", f"maildir delivery failed: create "
                              f"maildir file {maildir}: {exc.strerror}", self.name)

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        maildir = Path(request.nexthop)
        name = maildir_name(request, self.hostname)
        try:
            _make_maildir(maildir, request.uid, request.gid)
            if request.recovered and _already_delivered(maildir, name):
                return DeliveryResult(Status.SENT, "2.0.0", "delivered to maildir", self.name)
            tmp = maildir / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            return self._failed(maildir, exc)
        try:
            if request.uid >= 0 or request.gid >= 0:
                os.fchown(fd, request.uid, request.gid)
            view = memoryview(self._headers(request) + request.content)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            return self._failed(maildir, exc)
        try:
            await self.renamer.commit(fd, str(tmp), str(maildir / "new" / name), self.fsync)
        except OSError as exc:
            return self._failed(maildir, exc)
        return DeliveryResult(Status.SENT, "2.0.0", "delivered to maildir", self.name)
