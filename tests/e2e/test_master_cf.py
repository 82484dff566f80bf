"""master.cf beside main.cf: a line for a service mailgate does not run stops start-up with
file:line; every inet smtpd service listens with its -o settings and its own syslog_name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HOSTNAME, Client, Server, base_main_cf, free_port, wait_until

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


def served(server: Server, master_cf: str) -> Server:
    (server.root / "etc").mkdir(parents=True, exist_ok=True)
    (server.root / "etc" / "master.cf").write_text(master_cf)
    return server.start()


def raw_log(server: Server) -> list[str]:
    return server.log_path.read_text().splitlines() if server.log_path.exists() else []


@pytest.mark.parametrize("accept_process", ["yes", "no"])
def test_each_smtpd_service_listens_with_its_own_settings_and_syslog_name(  # type: ignore[no-untyped-def]
        server_factory, accept_process: str) -> None:
    smtp, submission = free_port(), free_port()
    server = served(server_factory(smtpd_accept_process=accept_process), f"""\
127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{submission} inet n - n - - smtpd
  -o syslog_name=mailgate/submission
  -o {{ smtpd_banner = $myhostname ESMTP submission }}
  -o smtpd_client_restrictions=reject
pickup    unix  n       -       y       60      1       pickup
""")
    assert server.port == smtp
    for port, banner in ((smtp, "ESMTP mailgate"), (submission, "ESMTP submission")):
        client = Client(port)
        assert client.reply() == f"220 {HOSTNAME} {banner}"
        client.send("HELO client.example")
        client.reply()
        client.send("MAIL FROM:<a@client.example>")
        client.reply()
        client.send("RCPT TO:<alice@example.test>")
        rcpt = client.reply()
        assert rcpt.startswith("250 " if port == smtp else "554 5.7.1 "), rcpt
        client.send("QUIT")
        client.reply()
        client.close()
    wait_until(lambda: sum("disconnect from" in x for x in raw_log(server)) == 2)
    lines = raw_log(server)
    plain = [x for x in lines if " mailgate/smtpd[" in x and "connect from" in x]
    sub = [x for x in lines if " mailgate/submission/smtpd[" in x and "connect from" in x]
    assert len(plain) == 2 and len(sub) == 2, lines  # connect and disconnect of each
    assert any("mailgate/submission/smtpd[" in x and "NOQUEUE: reject: RCPT" in x
               for x in lines), lines
    assert not any("smtpd services are not served" in x for x in lines)


def test_a_master_cf_without_smtpd_services_keeps_smtpd_listen(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = served(server_factory(), "pickup unix n - y 60 1 pickup\n")
    client = Client(server.port)
    assert client.reply().startswith("220 ")
    client.close()
    assert any("no smtpd service of type inet: listening on smtpd_listen" in x
               for x in raw_log(server))
