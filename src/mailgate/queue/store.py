"""The on-disk queue: one file per message, fsync'd (file and directory) before it counts.

Layout under `queue_directory`: `incoming/` (a transaction in progress, never acknowledged),
`active/` (accepted, waiting for or in delivery), `deferred/` (to retry), `hold/`, `corrupt/`
(files the queue manager could not read, moved aside as Postfix does).
A file is `MGQ1 <envelope length> <text length>\\n<envelope JSON>\\n<message text>` (files
of earlier versions lack the text length). Queue ids are Postfix's short form: five hex
digits of microseconds, then a hex sequence number.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailgate.errors import QueueError

MAGIC = b"MGQ1 "
QUEUES = ("incoming", "active", "deferred", "hold", "corrupt")
_ENCODER = json.JSONEncoder(separators=(",", ":"))
SPARES = 64  # emptied queue files a process keeps for reuse (see QueueStore.remove)


def _renameat2() -> Callable[[bytes, bytes], int] | None:
    """renameat2(RENAME_NOREPLACE) from the C library (glibc 2.28+), or None."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                     ctypes.c_uint)

    def rename_noreplace(src: bytes, dst: bytes) -> int:
        """0, or the errno: the destination is never replaced."""
        if func(-100, src, -100, dst, 1) == 0:  # AT_FDCWD, RENAME_NOREPLACE
            return 0
        return ctypes.get_errno() or errno.EIO
    return rename_noreplace
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class CorruptQueueFile(QueueError):
    """A queue file that cannot be read back: zero length, truncated, garbage, wrong magic."""


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
        record = dict(self.__dict__)  # asdict() without its deep copy: this is per message
        record["recipients"] = [dict(r.__dict__) for r in self.recipients]
        return _ENCODER.encode(record).encode("utf-8", "surrogateescape")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        raw = json.loads(data.decode("utf-8", "surrogateescape"))
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)


@dataclass
class Incoming:
    """A queue file opened for a transaction (Postfix opens it at the first accepted RCPT)."""

    queue_id: str
    path: str
    fd: int  # open for writing; it also holds the file's flock (the store closes it)


def _header(envelope: Envelope, content: bytes) -> bytes:
    header = envelope.to_json()
    return b"%s%d %d\n%s\n" % (MAGIC, len(header), len(content), header)


def parse(data: bytes) -> tuple[Envelope, bytes]:
    """Split a queue file into envelope and text; raises CorruptQueueFile."""
    if not data.startswith(MAGIC):
        raise CorruptQueueFile("missing end record" if MAGIC.startswith(data)
                               else "bad queue file magic")
    nl = data.find(b"\n", 0, 64)
    fields = data[len(MAGIC) : nl].split() if nl > 0 else []
    if not fields or len(fields) > 2 or not all(f.isdigit() for f in fields):
        raise CorruptQueueFile("missing end record" if nl < 0 else "bad queue file header")
    length = int(fields[0])
    start = nl + 1 + length
    if data[start : start + 1] != b"\n" or (len(fields) == 2
                                            and len(data) - start - 1 != int(fields[1])):
        raise CorruptQueueFile("missing end record")  # Postfix's words for a short file
    try:
        envelope = Envelope.from_json(data[nl + 1 : start])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptQueueFile(f"bad envelope record: {exc}") from exc
    if not _well_typed(envelope):
        raise CorruptQueueFile("bad envelope record")
    return envelope, data[start + 1 :]


def _well_typed(envelope: Envelope) -> bool:
    """The fields the queue manager computes with have their types (JSON could say anything)."""
    numbers = (envelope.arrival, envelope.next_attempt, envelope.attempts, envelope.size)
    return (isinstance(envelope.sender, str) and isinstance(envelope.extra, dict)
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers)
            and all(isinstance(r.address, str) and isinstance(r.done, bool)
                    for r in envelope.recipients))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class QueueStore:
    """Creates, commits, reads, moves and removes queue files under one directory."""

    def __init__(self, directory: str | Path, clock: Callable[[], float] = time.time,
                 fsync: bool = True, slot: int = 0, slots: int = 1) -> None:
        self.root = Path(directory)
        self.clock = clock
        self.fsync = fsync
        # A random start, then steps that keep the low bits at this worker's slot.
        self._step = 1 << max(slots - 1, 0).bit_length()
        self._seq = (int.from_bytes(os.urandom(3), "big") & -self._step) | slot % self._step
        self._locks: dict[str, int] = {}  # queue id -> descriptor holding its flock
        self._dirs = {name: os.path.join(str(self.root), name) for name in (*QUEUES, "spare")}
        self._spares: list[str] = []  # this process's emptied queue files, for reuse
        self._spare_seq = 0
        self._noreplace = _renameat2()
        for name in (*QUEUES, "spare"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def path(self, queue: str, queue_id: str) -> Path:
        return self.root / queue / queue_id

    def file(self, queue: str, queue_id: str) -> str:
        """The path of a queue file as a string (the hot path: no pathlib objects)."""
        return f"{self._dirs[queue]}/{queue_id}"

    def new_id(self) -> str:
        """A queue id, named like a Postfix short queue id: five hex digits of microseconds,
        then a 24-bit sequence number in hex (Postfix uses the inode number). The sequence's
        low bits are the worker's slot, so two workers never make the same id; one worker
        repeats an id only after 2^24 / (workers rounded up to a power of two) messages
        (2^22 with four), and only in the same microsecond."""
        self._seq = (self._seq + self._step) & 0xFFFFFF
        return f"{int((self.clock() % 1) * 1_000_000):05X}{self._seq:06X}"

    def create(self, queue_id: str = "") -> Incoming:
        """Open a new queue file in incoming/ named `queue_id` (a new one when empty, or in
        the very unlikely case that a queued message still has that id).

        O_EXCL makes a clash impossible. The descriptor both writes the file and holds its
        flock (one open per message).
        """
        incoming = self._dirs["incoming"]
        for _ in range(1000):
            queue_id = queue_id or self.new_id()
            path = f"{incoming}/{queue_id}"
            try:
                fd = self._reuse(path)
                if fd < 0:
                    fd = os.open(path, _CREATE, 0o600)
            except FileExistsError:
                queue_id = ""
                continue
            except OSError as exc:
                raise QueueError(f"create file {path}: {exc.strerror}") from exc
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else can hold it
            self._locks[queue_id] = fd
            return Incoming(queue_id, path, fd)
        raise QueueError("cannot create a unique queue file")

    def _reuse(self, path: str) -> int:
        """A spare (emptied) queue file moved to `path` and opened, or -1 when there is
        none. Reusing a file saves the inode allocation and the deletion that creating and
        removing one costs (a quarter of a message's system time on ext4)."""
        while self._spares and self._noreplace is not None:
            spare = self._spares.pop()
            err = self._noreplace(spare.encode(), path.encode())
            if err == errno.EEXIST:
                self._spares.append(spare)
                raise FileExistsError(err, os.strerror(err), path)
            if err == 0:
                return os.open(path, os.O_RDWR | os.O_TRUNC | os.O_CLOEXEC)
        return -1

    def write(self, incoming: Incoming, envelope: Envelope, content: bytes) -> None:
        """Write envelope and text into the open incoming file (not yet durable: the server
        then hands the descriptor to queue.durable.DurableRenamer, which fsyncs it, renames it
        into active/ and fsyncs the directory before `250` is sent)."""
        try:
            header = _header(envelope, content)
            done = os.writev(incoming.fd, (header, content))  # one call, no joined copy
            if done < len(header) + len(content):  # a short write (a signal, a full disk)
                view = memoryview(header + content)[done:]
                while view:
                    view = view[os.write(incoming.fd, view):]
        except OSError as exc:
            self.abort(incoming)
            raise QueueError(f"{incoming.queue_id}: cannot store message: {exc.strerror}") from exc

    def submit(self, envelope: Envelope, content: bytes) -> str:
        """A message made here (a bounce): written, fsync'd and in active/; its queue id.

        Raises QueueError (nothing is left behind then).
        """
        incoming = self.create()
        envelope.queue_id = incoming.queue_id
        self.write(incoming, envelope, content)
        try:
            if self.fsync:
                os.fsync(incoming.fd)
            os.rename(incoming.path, self.file("active", incoming.queue_id))
            if self.fsync:
                _fsync_dir(self.root / "active")
        except OSError as exc:
            self.abort(incoming, "active")
            raise QueueError(f"{incoming.queue_id}: cannot store message: {exc.strerror}") \
                from exc
        incoming.fd = -1  # the descriptor stays open: it holds the file's lock
        return incoming.queue_id

    def abort(self, incoming: Incoming, queue: str | None = None) -> None:
        """Drop a transaction that was never acknowledged; with `queue`, also a copy already
        renamed there whose directory fsync failed (it must not be delivered either)."""
        if incoming.fd >= 0 and self._locks.get(incoming.queue_id) != incoming.fd:
            os.close(incoming.fd)
        incoming.fd = -1
        self.release(incoming.queue_id)
        paths = [incoming.path] if queue is None else \
            [incoming.path, self.file(queue, incoming.queue_id)]
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def read(self, queue: str, queue_id: str) -> tuple[Envelope, bytes]:
        """The envelope and text of a queue file.

        Raises OSError (e.g. the file is gone) or CorruptQueueFile, whose text is the reason
        in Postfix's words where it has some.
        """
        return parse(self.path(queue, queue_id).read_bytes())

    def rewrite(self, queue: str, envelope: Envelope, content: bytes) -> None:
        """Atomically replace a queue file's envelope (recipient status, retry time)."""
        final = self.path(queue, envelope.queue_id)
        tmp = final.with_name(final.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(_header(envelope, content))
                f.write(content)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        except OSError:  # ENOSPC, EIO: the old file stays as it was
            tmp.unlink(missing_ok=True)
            raise
        owned = self._locks.pop(envelope.queue_id, -1)
        if owned >= 0:  # the lock goes with the new file, taken before it is in place
            self._take(envelope.queue_id, tmp)
        os.rename(tmp, final)
        if owned >= 0:
            os.close(owned)
        if self.fsync:
            _fsync_dir(final.parent)

    def move(self, queue_id: str, src: str, dst: str) -> None:
        os.rename(self.path(src, queue_id), self.path(dst, queue_id))
        if self.fsync:
            _fsync_dir(self.root / dst)

    def save_corrupt(self, queue: str, queue_id: str) -> None:
        """Move an unreadable file aside to corrupt/ (Postfix's qmgr_active_corrupt())."""
        self.move(queue_id, queue, "corrupt")

    def remove(self, queue: str, queue_id: str) -> None:
        """Remove a delivered message. Not fsync'd: a removal lost in a crash only makes the
        message come back, and redelivery finds the earlier Maildir copy (maildir_name)."""
        path = self.file(queue, queue_id)
        if not self._keep_spare(queue_id, path):
            os.unlink(path)
        self.release(queue_id)

    def _keep_spare(self, queue_id: str, path: str) -> bool:
        """Move an owned queue file to spare/ for the next create(), which truncates it."""
        if len(self._spares) >= SPARES or queue_id not in self._locks or not self._noreplace:
            return False
        self._spare_seq += 1
        spare = f"{self._dirs['spare']}/{os.getpid()}.{self._spare_seq}"
        try:
            os.rename(path, spare)
        except OSError:
            return False
        self._spares.append(spare)
        return True

    def list_queue(self, queue: str) -> list[str]:
        return sorted(p.name for p in (self.root / queue).iterdir()
                      if not p.name.endswith(".tmp"))

    # Ownership. A queue file in active/ belongs to the worker holding an flock on it (a
    # descriptor of its own, so the lock survives the renames and the close of the write
    # descriptor). The kernel drops the locks of a worker that dies, however it dies, so its
    # messages become claimable at once by another worker; a live worker's never are.

    def _take(self, queue_id: str, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._locks[queue_id] = fd
        return True

    def claim(self, queue: str, queue_id: str) -> bool:
        """Take a queue file that no live worker owns (False: owned, or gone)."""
        if queue_id in self._locks:
            return False
        return self._take(queue_id, self.path(queue, queue_id))

    def owns(self, queue_id: str) -> bool:
        return queue_id in self._locks

    def release(self, queue_id: str) -> None:
        """Give up a queue file (delivered, deferred, held, aborted, or left for a retry)."""
        fd = self._locks.pop(queue_id, -1)
        if fd >= 0:
            os.close(fd)

    def drop_orphaned_incoming(self, age: float = 60.0) -> int:
        """Remove incoming/ files nobody holds that are older than `age` seconds: a worker
        killed mid-transaction never answered `250` for them (the age keeps a file that was
        just created, before its lock, safe)."""
        dropped = 0
        now = time.time()
        for path in (self.root / "incoming").iterdir():
            try:
                old = now - path.stat().st_mtime > age
            except FileNotFoundError:
                continue
            if old and self.claim("incoming", path.name):
                path.unlink(missing_ok=True)
                self.release(path.name)
                dropped += 1
        return dropped

    def recover(self) -> list[str]:
        """At start: drop unacknowledged incoming files; return the active ids to deliver."""
        for p in (*(self.root / "incoming").iterdir(), *(self.root / "spare").iterdir()):
            p.unlink()
        for p in (self.root / "active").iterdir():
            if p.name.endswith(".tmp"):
                p.unlink()
        return self.list_queue("active")
