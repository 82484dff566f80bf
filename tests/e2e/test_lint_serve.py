"""`mailgate serve` warns about a compiled table older than its source at start-up and at each
reload, in Postfix's words (the stale-table check `mailgate lint` shares)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import Server
from mailgate.maps.compiled import compile_source


def _table(path: Path, text: str, source_time: float, db_time: float) -> None:
    path.write_text(text)
    compile_source("hash", str(path), fold_case=True)
    os.utime(path, (source_time, source_time))
    os.utime(f"{path}.db", (db_time, db_time))


def test_stale_table_warning_at_start_up_and_reload(server_factory, tmp_path: Path  # type: ignore[no-untyped-def]
                                                    ) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _table(first, "192.0.2.9 REJECT\n", source_time=2e9, db_time=1e9)  # edited, not rebuilt
    _table(second, "192.0.2.10 REJECT\n", source_time=1e9, db_time=1e9)
    server: Server = server_factory(smtpd_client_restrictions=(
        f"check_client_access hash:{first}, check_client_access hash:{second}")).start()
    stale = "master: warning: database {0}.db is older than source file {0}"
    assert server.wait_log("older than source file") == [stale.format(first)]

    assert server.proc is not None
    _table(first, "192.0.2.9 REJECT\n", source_time=2e9, db_time=2e9)  # postmap'd now
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"master: reload -- ")
    _table(second, "192.0.2.10 REJECT\n", source_time=3e9, db_time=1e9)  # edited since
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"master: reload -- ", count=2)
    server.wait_log(stale.format(second))
    assert [line for line in server.log() if "older than source file" in line] == [
        stale.format(first), stale.format(second)]
