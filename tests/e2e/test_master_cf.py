"""master.cf beside main.cf at start-up: a line for a service mailgate does not run stops it
with file:line; smtpd services are checked and, until they are served, announced as such."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Server, base_main_cf

STOCK = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=none
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
"""


def test_a_service_mailgate_does_not_run_stops_startup(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text(base_main_cf(tmp_path))
    (tmp_path / "etc" / "master.cf").write_text(
        STOCK + "postscreen inet n - y - 1 postscreen\n")
    done = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c",
                           str(tmp_path / "etc")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"{tmp_path / 'etc' / 'master.cf'}:8: service postscreen:" in done.stderr, done.stderr


def test_smtpd_services_are_checked_and_announced(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory()
    (server.root / "etc").mkdir(parents=True, exist_ok=True)
    (server.root / "etc" / "master.cf").write_text(STOCK)
    server.start()
    line = server.wait_log(r"master: warning: .*master\.cf: smtpd services are not served")[0]
    assert "(smtp, submission)" in line
