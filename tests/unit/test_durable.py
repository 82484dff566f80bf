"""The durable renamer: files written by the loop or created in its thread, fsync'd, renamed."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from mailgate.queue.durable import DurableRenamer


class Refused(OSError):
    pass


def test_commit_new_creates_writes_and_renames_in_the_thread(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "new").mkdir()
    threads: list[str] = []

    def write(name: str) -> int:
        threads.append(threading.current_thread().name)
        fd = os.open(tmp_path / "tmp" / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, name.encode())
        return fd

    async def main() -> None:
        renamer = DurableRenamer(asyncio.get_running_loop())
        try:
            await asyncio.gather(*(renamer.commit_new(
                lambda n=n: write(f"m{n}"), str(tmp_path / "tmp" / f"m{n}"),
                str(tmp_path / "new" / f"m{n}")) for n in range(20)))
        finally:
            renamer.stop()

    asyncio.run(main())
    assert sorted(os.listdir(tmp_path / "new")) == sorted(f"m{n}" for n in range(20))
    assert os.listdir(tmp_path / "tmp") == []
    assert (tmp_path / "new" / "m7").read_text() == "m7"
    assert set(threads) == {"mailgate-fsync"}  # never the event loop's thread


def test_a_writer_error_reaches_its_caller_and_only_it(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()

    def refuse() -> int:
        raise Refused(28, "No space left on device")

    def broken() -> int:
        raise ValueError("a bug in a writer")

    def good() -> int:
        return os.open(tmp_path / "ok", os.O_WRONLY | os.O_CREAT, 0o600)

    async def main() -> None:
        renamer = DurableRenamer(asyncio.get_running_loop())
        try:
            results = await asyncio.gather(
                renamer.commit_new(refuse, str(tmp_path / "x"), str(tmp_path / "new" / "x")),
                renamer.commit_new(good, str(tmp_path / "ok"), str(tmp_path / "new" / "ok")),
                return_exceptions=True)
            assert isinstance(results[0], Refused) and results[0].errno == 28
            assert results[1] is None
            with pytest.raises(OSError, match="a bug in a writer"):  # the thread lives on
                await renamer.commit_new(broken, str(tmp_path / "b"), str(tmp_path / "new" / "b"))
            with pytest.raises(FileNotFoundError):  # a failed rename: the caller hears it
                await renamer.commit_new(lambda: os.open(tmp_path / "y", os.O_WRONLY
                                                         | os.O_CREAT, 0o600),
                                         str(tmp_path / "gone"), str(tmp_path / "new" / "y"))
        finally:
            renamer.stop()

    asyncio.run(main())
    assert os.listdir(tmp_path / "new") == ["ok"]
