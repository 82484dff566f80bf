"""The queue store's hot path: one descriptor per queue file (write + lock), spare files reused."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from mailgate.queue.store import SPARES, Envelope, QueueStore, Recipient, parse


def _queued(store: QueueStore, text: bytes = b"Subject: x\n\nbody\n") -> tuple[str, int]:
    """A message created, written and moved to active/ as smtpd does; (queue id, inode)."""
    incoming = store.create()
    envelope = Envelope(incoming.queue_id, "s@example.test", [Recipient("r@example.test")],
                        1.0)
    store.write(incoming, envelope, text)
    os.rename(incoming.path, store.file("active", incoming.queue_id))
    return incoming.queue_id, os.stat(store.file("active", incoming.queue_id)).st_ino


def test_the_write_descriptor_holds_the_lock(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    incoming = store.create()
    other = os.open(incoming.path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert store.owns(incoming.queue_id)
        store.abort(incoming)
        assert not os.path.exists(incoming.path)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the abort
    finally:
        os.close(other)


def test_a_removed_file_is_reused_empty(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    first, inode = _queued(store, b"Subject: first\n\n" + b"x" * 5000 + b"\n")
    store.remove("active", first)
    assert os.listdir(tmp_path / "active") == []
    assert len(os.listdir(tmp_path / "spare")) == 1
    second, reused = _queued(store, b"Subject: second\n\nshort\n")
    assert second != first and reused == inode  # the same inode, a new name
    envelope, text = parse(Path(store.file("active", second)).read_bytes())
    assert envelope.queue_id == second and text == b"Subject: second\n\nshort\n"
    assert os.listdir(tmp_path / "spare") == []


def test_spares_are_bounded_and_cleared_at_recovery(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    ids = [_queued(store)[0] for _ in range(SPARES + 5)]
    for queue_id in ids:
        store.remove("active", queue_id)
    assert len(os.listdir(tmp_path / "spare")) == SPARES  # the rest were unlinked
    assert os.listdir(tmp_path / "active") == []
    assert QueueStore(tmp_path).recover() == []
    assert os.listdir(tmp_path / "spare") == []


def test_a_file_not_owned_is_unlinked_not_kept(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    queue_id, _ = _queued(store)
    store.release(queue_id)  # e.g. a held message released by another process
    store.remove("active", queue_id)
    assert os.listdir(tmp_path / "spare") == [] and os.listdir(tmp_path / "active") == []


@pytest.mark.parametrize("workers", [1, 2, 3, 12, 68])
def test_workers_never_make_the_same_id(tmp_path: Path, workers: int) -> None:
    """The sequence's low bits are the worker's slot: with one clock, the workers' ids never
    meet, and one worker's ids do not repeat for 2^24 / workers (rounded up) messages."""
    stores = [QueueStore(tmp_path, clock=lambda: 0.5, slot=slot, slots=workers)
              for slot in range(workers)]
    step = 1 << (workers - 1).bit_length()
    count = 65536 if workers == 1 else 2048
    ids = [{store.new_id() for _ in range(count)} for store in stores]
    assert sum(len(i) for i in ids) == len(set().union(*ids))
    assert len(ids[0]) == count and stores[0]._step == step
    assert all(len(i) == 11 and i.startswith("7A120") for i in ids[-1])  # 500000 µs


def test_create_under_a_given_id_and_around_a_taken_one(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    wanted = store.new_id()
    incoming = store.create(wanted)
    assert incoming.queue_id == wanted and os.path.exists(tmp_path / "incoming" / wanted)
    other = store.create(wanted)  # still there (a message queued under it): another id
    assert other.queue_id != wanted and os.path.exists(other.path)
