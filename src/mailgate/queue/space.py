"""queue_minfree: Postfix smtpd_check_queue(), the free-space test that MAIL FROM passes first."""

from __future__ import annotations

import os
from dataclasses import dataclass

SPACE_MULTIPLIER = 1.5  # smtpd_space_multf: room for 1.5 messages of message_size_limit
INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage"


@dataclass(frozen=True, slots=True)
class FsSpace:
    """Postfix's fsspace(): the fragment size and the blocks an unprivileged user may take."""

    block_size: int
    block_free: int


def fsspace(path: str) -> FsSpace:
    """statvfs(2) of `path` as Postfix's fsspace() reads it (f_frsize, f_bavail).

    Raises OSError (Postfix's smtpd dies with a fatal error there).
    """
    st = os.statvfs(path)
    return FsSpace(st.f_frsize or st.f_bsize or 1, st.f_bavail)


def insufficient(space: FsSpace, queue_minfree: int, message_size_limit: int) -> bool:
    """smtpd_check_queue()'s test, with its integer and floating-point arithmetic:
    `minfree/bsize >= free || size_limit/bsize >= free / 1.5` (so a full file system fails
    even with both parameters 0)."""
    size = space.block_size
    return (queue_minfree // size >= space.block_free
            or message_size_limit // size >= space.block_free / SPACE_MULTIPLIER)


def check_queue(path: str, queue_minfree: int, message_size_limit: int) -> str | None:
    """The warning smtpd logs after its `452 4.3.1` reject, or None when there is room.

    A file system that cannot be asked counts as room: the queue file write then fails
    with `451 4.3.0` if it has to.
    """
    try:
        space = fsspace(path)
    except OSError:
        return None
    if not insufficient(space, queue_minfree, message_size_limit):
        return None
    return (f"not enough free space in mail queue: {space.block_free * space.block_size} "
            f"bytes < {SPACE_MULTIPLIER:g}*message size limit")


def minfree_warning(queue_minfree: int, message_size_limit: int) -> str | None:
    """smtpd's start-up warning when queue_minfree is set below 1.5 * message_size_limit."""
    if queue_minfree > 0 and message_size_limit > 0 \
            and queue_minfree / SPACE_MULTIPLIER < message_size_limit:
        return (f"queue_minfree({queue_minfree}) should be at least "
                f"{SPACE_MULTIPLIER:g}*message_size_limit({message_size_limit})")
    return None
