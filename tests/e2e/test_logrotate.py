"""Log rotation as `postfix logrotate` does it: rename maillog_file, `mailgate postlog
reopen`, and every line is in one of the two files."""

from __future__ import annotations

import smtplib
import subprocess
import sys

from conftest import Server, wait_until


def test_postlog_reopen(server: Server) -> None:
    def session(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
            smtp.sendmail("alice@example.test", ["bob@example.test"],
                          f"Subject: rotate {n}\r\n\r\nbody\r\n".encode())

    session(1)
    server.wait_log(r"^qmgr: .*: removed")
    server.wait_log(r"^smtpd: disconnect from")  # either may come last
    rotated = server.log_path.with_name("maillog.1")
    server.log_path.rename(rotated)
    out = subprocess.run([sys.executable, "-m", "mailgate.cli", "postlog", "-c",
                          str(server.root / "etc"), "reopen"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    wait_until(server.log_path.exists)  # the workers reopened it
    session(2)
    server.wait_log(r"^qmgr: .*: removed")
    server.wait_log(r"^smtpd: disconnect from")
    old, new = rotated.read_text(), server.log_path.read_text()
    assert old.count("status=sent") == 1 and new.count("status=sent") == 1
    assert old.count("disconnect from") == 1 and new.count("connect from") == 2  # dis+connect
