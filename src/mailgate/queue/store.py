"""The on-disk queue: one file per message, fsync'd (file and directory) before it counts.

Layout under `queue_directory`: `incoming/` (a transaction in progress, never acknowledged),
`active/` (accepted, waiting for or in delivery), `deferred/` (to retry), `hold/`.
A file is `MGQ1 <envelope length>\\n<envelope JSON>\\n<message text>`. Queue ids are Postfix's
short form: five hex digits of microseconds, then a hex sequence number.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mailgate.errors import QueueError

MAGIC = b"MGQ1 "
QUEUES = ("incoming", "active", "deferred", "hold")


@dataclass
class Recipient:
    """One envelope recipient and what happened to it so far."""

    address: str
    orcpt: str = ""
    notify: str = ""
    done: bool = False
    dsn: str = ""  # the last temporary failure (mailq shows it; an expiry bounces with it)
    reason: str = ""


@dataclass
class Envelope:
    """What the queue file records besides the message text."""

    queue_id: str
    sender: str
    recipients: list[Recipient]
    arrival: float
    client_name: str = "unknown"
    client_addr: str = ""
    helo: str = ""
    protocol: str = "SMTP"
    size: int = 0
    message_id: str = ""
    attempts: int = 0
    next_attempt: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8", "surrogateescape")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        raw = json.loads(data.decode("utf-8", "surrogateescape"))
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)


@dataclass
class Incoming:
    """A queue file opened for a transaction (Postfix opens it at the first accepted RCPT)."""

    queue_id: str
    path: Path
    fd: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class QueueStore:
    """Creates, commits, reads, moves and removes queue files under one directory."""

    def __init__(self, directory: str | Path, clock: Callable[[], float] = time.time,
                 fsync: bool = True) -> None:
        self.root = Path(directory)
        self.clock = clock
        self.fsync = fsync
        self._seq = int.from_bytes(os.urandom(3), "big")
        for name in QUEUES:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def path(self, queue: str, queue_id: str) -> Path:
        return self.root / queue / queue_id

    def create(self) -> Incoming:
        """Open a new queue file in incoming/, named like a Postfix short queue id.

        Five hex digits of microseconds, then a per-process sequence number in hex (Postfix
        uses the inode number; a counter saves a rename). O_EXCL makes a clash impossible.
        """
        incoming = self.root / "incoming"
        for _ in range(1000):
            now = self.clock()
            self._seq = (self._seq + 1) & 0xFFFFFF
            queue_id = f"{int((now % 1) * 1_000_000):05X}{self._seq | 0x100000:X}"
            path = incoming / queue_id
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise QueueError(f"create file {path}: {exc.strerror}") from exc
            return Incoming(queue_id, path, fd)
        raise QueueError("cannot create a unique queue file")

    def write(self, incoming: Incoming, envelope: Envelope, content: bytes) -> None:
        """Write envelope and text into the open incoming file (not yet durable: the server
        then hands the descriptor to queue.durable.DurableRenamer, which fsyncs it, renames it
        into active/ and fsyncs the directory before `250` is sent)."""
        header = envelope.to_json()
        try:
            data = b"".join((MAGIC, str(len(header)).encode(), b"\n", header, b"\n", content))
            view = memoryview(data)
            while view:
                view = view[os.write(incoming.fd, view):]
        except OSError as exc:
            self.abort(incoming)
            raise QueueError(f"{incoming.queue_id}: cannot store message: {exc.strerror}") from exc

    def submit(self, envelope: Envelope, content: bytes) -> str:
        """A message made here (a bounce): written, fsync'd and in active/; its queue id."""
        incoming = self.create()
        envelope.queue_id = incoming.queue_id
        self.write(incoming, envelope, content)
        if self.fsync:
            os.fsync(incoming.fd)
        os.close(incoming.fd)
        incoming.fd = -1
        os.rename(incoming.path, self.path("active", incoming.queue_id))
        if self.fsync:
            _fsync_dir(self.root / "active")
        return incoming.queue_id

    def abort(self, incoming: Incoming) -> None:
        """Drop a transaction that was never acknowledged."""
        if incoming.fd >= 0:
            os.close(incoming.fd)
            incoming.fd = -1
        try:
            os.unlink(incoming.path)
        except FileNotFoundError:
            pass

    def read(self, queue: str, queue_id: str) -> tuple[Envelope, bytes]:
        data = self.path(queue, queue_id).read_bytes()
        if not data.startswith(MAGIC):
            raise QueueError(f"{queue}/{queue_id}: not a mailgate queue file")
        nl = data.index(b"\n")
        length = int(data[len(MAGIC) : nl])
        envelope = Envelope.from_json(data[nl + 1 : nl + 1 + length])
        return envelope, data[nl + 2 + length :]

    def rewrite(self, queue: str, envelope: Envelope, content: bytes) -> None:
        """Atomically replace a queue file's envelope (recipient status, retry time)."""
        final = self.path(queue, envelope.queue_id)
        tmp = final.with_name(final.name + ".tmp")
        header = envelope.to_json()
        with open(tmp, "wb") as f:
            f.write(MAGIC + str(len(header)).encode() + b"\n" + header + b"\n")
            f.write(content)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.rename(tmp, final)
        if self.fsync:
            _fsync_dir(final.parent)

    def move(self, queue_id: str, src: str, dst: str) -> None:
        os.rename(self.path(src, queue_id), self.path(dst, queue_id))
        if self.fsync:
            _fsync_dir(self.root / dst)

    def remove(self, queue: str, queue_id: str) -> None:
        """Remove a delivered message. Not fsync'd: a removal lost in a crash only makes the
        message come back, and redelivery finds the earlier Maildir copy (maildir_name)."""
        os.unlink(self.path(queue, queue_id))

    def list_queue(self, queue: str) -> list[str]:
        return sorted(p.name for p in (self.root / queue).iterdir()
                      if not p.name.endswith(".tmp"))

    def recover(self) -> list[str]:
        """At start: drop unacknowledged incoming files; return the active ids to deliver."""
        for p in (self.root / "incoming").iterdir():
            p.unlink()
        for p in (self.root / "active").iterdir():
            if p.name.endswith(".tmp"):
                p.unlink()
        return self.list_queue("active")
