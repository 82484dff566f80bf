"""File-system helpers for storage tests: a tmpfs of a given size, read-only remounts, a
disk filled to a given free space, queue listings, `mailgate queue flush`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import Server


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mount: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free (rounded to blocks)."""
    filler = mount / "filler"
    with open(filler, "ab") as f:
        f.write(b"x" * max(free_bytes(mount) - leave, 0))
    return filler


def flush(server: Server) -> None:
    subprocess.run([sys.executable, "-m", "mailgate.cli", "queue", "flush", "-c",
                    str(server.root / "etc")], check=True, capture_output=True, timeout=30)


def queue_files(queue_dir: Path, queue: str) -> list[str]:
    directory = queue_dir / queue
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
