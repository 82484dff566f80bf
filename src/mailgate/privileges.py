"""Giving up root: mail_owner's identity, dropping to it, handing it the queue (decision 0059)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import pkgutil
import pwd
import signal
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mailgate.config.config import Config
from mailgate.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Owner:
    """mail_owner: the unprivileged user that every client-facing process runs as."""

    name: str
    uid: int
    gid: int


def mail_owner(cfg: Config) -> Owner | None:
    """mail_owner's identity when the server starts as root (None otherwise: it then runs as
    whoever started it). A missing user or one with a privileged user or group ID is a
    start-up error, in Postfix's words."""
    if os.geteuid() != 0:
        return None
    name = cfg.get_str("mail_owner")
    where = cfg.origin("mail_owner")
    where = f"{cfg.config_dir}/main.cf" if where == "default" and cfg.config_dir else where
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"{where}: parameter mail_owner: unknown user name value: {name}"
                          ) from None
    if entry.pw_uid == 0:
        raise ConfigError(f"{where}: parameter mail_owner: user {name} has privileged user ID")
    if entry.pw_gid == 0:
        raise ConfigError(f"{where}: parameter mail_owner: user {name} has privileged group ID")
    return Owner(name, entry.pw_uid, entry.pw_gid)


def die_with_parent() -> None:
    """Be killed when the parent process ends (PR_SET_PDEATHSIG): `kill -9` of the master
    takes its workers along. Linux forgets it when the process changes its credentials."""
    with contextlib.suppress(OSError, AttributeError):
        _c_library().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def drop(owner: Owner | None) -> None:
    """Become `owner` for good: no supplementary groups, its group, its user (real,
    effective and saved, in every thread), still dying with the parent. Raises OSError if
    any step did not hold; exits if the parent ended meanwhile."""
    if owner is None:
        return
    parent = os.getppid()
    os.setgroups([])
    os.setgid(owner.gid)
    os.setuid(owner.uid)
    if os.getresuid() != (owner.uid,) * 3 or os.getresgid() != (owner.gid,) * 3 \
            or os.getgroups():
        raise OSError(f"could not become {owner.name}")
    die_with_parent()  # (the change of user cleared it)
    if os.getppid() != parent:
        os._exit(1)


# imported on first use, by mailgate or by the standard library: after the drop the
# interpreter's files may be out of reach (a Python under /root), so they come first
_LATER = ("concurrent.futures.thread", "encodings.idna", "encodings.punycode", "unicodedata",
          "stringprep", "gzip", "wsgiref.simple_server", "uvloop", "_strptime", "redis",
          "redis.asyncio", "redis.asyncio.cluster", "redis.asyncio.sentinel", "hiredis")
_METRICS = ("mailgate.metrics.prom", "prometheus_client", "prometheus_client.multiprocess",
            "prometheus_client.exposition", "prometheus_client.core")


def preload(metrics: bool) -> None:
    """Import, while still root, every module a process may import later: all of
    mailgate's, and what they or the standard library import on first use (`metrics`:
    prometheus-client too, once its directory is set)."""
    import mailgate

    for info in pkgutil.walk_packages(mailgate.__path__, "mailgate."):
        if info.name not in _METRICS:
            importlib.import_module(info.name)
    for name in (*_LATER, *(_METRICS if metrics else ())):
        with contextlib.suppress(ImportError):  # uvloop is optional
            importlib.import_module(name)


def hand_over(paths: Iterable[Path], owner: Owner | None) -> None:
    """Give `owner` these directories and the files in them (the queue's directories, as
    `postfix set-permissions` does); a path it cannot reach through its parents is a
    ConfigError naming the parent that stops it."""
    if owner is None:
        return
    for path in paths:
        if not path.exists():
            continue
        blocked = _blocking_parent(path, owner)
        if blocked is not None:
            raise ConfigError(f"{path}: mail_owner {owner.name} cannot reach it: {blocked} "
                              f"has mode {stat.S_IMODE(blocked.stat().st_mode):04o}")
        for item in (path, *path.iterdir()):
            st = item.lstat()
            if (st.st_uid, st.st_gid) != (owner.uid, owner.gid) and not stat.S_ISLNK(st.st_mode):
                os.chown(item, owner.uid, owner.gid)


def hand_file(path: str, owner: Owner | None) -> None:
    """Give `owner` a regular file it writes and reopens (maillog_file); anything else
    (/dev/stdout, a missing file) stays as it is."""
    if owner is None or not path:
        return
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            os.chown(path, owner.uid, owner.gid)


def _blocking_parent(path: Path, owner: Owner) -> Path | None:
    """The first parent directory that `owner` may not search, or None."""
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == owner.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == owner.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return parent
    return None


@functools.cache
def _c_library() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setfs(uid: int, gid: int) -> None:
    libc = _c_library()
    if uid == 0:  # to root: the user first (root's rights set the group after)
        libc.setfsuid(0)
        libc.setfsgid(gid)
    else:
        libc.setfsgid(gid)
        libc.setfsuid(uid)
    if libc.setfsuid(-1) != uid or libc.setfsgid(-1) != gid:  # -1 changes nothing: reads
        raise OSError(f"could not take the file system identity {uid}:{gid}")


@contextlib.contextmanager
def file_identity(uid: int, gid: int) -> Iterator[None]:
    """In this thread only, access files as uid:gid (Linux's file system identity; the
    process stays root): files it creates are theirs and their permissions apply, as
    Postfix's delivery agents write a mailbox with the recipient's rights. Nests: the
    identity before is restored."""
    libc = _c_library()
    before = (libc.setfsuid(-1), libc.setfsgid(-1))
    _setfs(uid, gid)
    try:
        yield
    finally:
        _setfs(*before)
