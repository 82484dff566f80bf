"""`mailgate start|status|reload|stop|abort` as postfix(1)'s commands: a background server with
a PID file, found, reloaded and stopped through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Client, base_main_cf, wait_until


def mailgate(etc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgate.cli", *args, "-c", str(etc)],
                          capture_output=True, text=True, timeout=120)


def test_start_status_reload_stop(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(base_main_cf(tmp_path) + "smtpd_processes = 1\n")
    assert mailgate(etc, "status").returncode == 1
    started = mailgate(etc, "start")
    assert started.returncode == 0, started.stderr
    port = int(started.stderr.rsplit(":", 1)[1])
    try:
        assert mailgate(etc, "start").returncode == 1  # already running
        assert "is running: PID: " in mailgate(etc, "status").stderr
        client = Client(port)
        assert client.reply().startswith("220 ")
        client.close()
        (etc / "main.cf").write_text((etc / "main.cf").read_text()
                                     + "smtpd_banner = $myhostname ESMTP reloaded\n")
        assert mailgate(etc, "reload").returncode == 0
        log = tmp_path / "maillog"
        wait_until(lambda: "master: reload -- " in log.read_text().replace("]:", ":")
                   or " reload -- " in log.read_text())
        client = Client(port)
        assert client.reply().endswith("ESMTP reloaded")
        client.close()
    finally:
        stopped = mailgate(etc, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert mailgate(etc, "status").returncode == 1


def test_a_configuration_that_does_not_load_does_not_start(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(base_main_cf(tmp_path) + "smtpd_hard_error_limit = many\n")
    started = mailgate(etc, "start")
    assert started.returncode == 1
    assert "smtpd_hard_error_limit" in started.stderr


def test_abort(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(base_main_cf(tmp_path) + "smtpd_processes = 1\n")
    assert mailgate(etc, "start").returncode == 0
    assert mailgate(etc, "abort").returncode == 0
    assert mailgate(etc, "status").returncode == 1
