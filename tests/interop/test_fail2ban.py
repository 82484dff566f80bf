"""fail2ban reads mailgate's log as it reads Postfix's: the same rejected sessions played to
the reference Postfix and to mailgate (`syslog_name = postfix`) give the same fail2ban-regex
matches with the stock `postfix` filter in modes normal, more and aggressive; with mailgate's
default name, the shipped filter (contrib/fail2ban) gives them too."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import reference_postfix, require, wait_until
from interop.test_differential import run
from support import reference

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "dialogues"
MODES = ("normal", "more", "aggressive")
SETTINGS = {
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "smtpd_client_restrictions": "check_client_access inline:{{192.0.2.66=REJECT}}",
    "smtpd_helo_restrictions": "reject_invalid_helo_hostname",
    "smtpd_recipient_restrictions": "reject_unauth_pipelining, reject_non_fqdn_recipient, "
                                    "reject_unauth_destination",
    "smtpd_hard_error_limit": "4",
    "smtpd_soft_error_limit": "2",
    "smtpd_error_sleep_time": "0s",
}
SESSIONS = [
    ["XCLIENT ADDR=192.0.2.66 NAME=spam.example", "EHLO spam.example",
     "MAIL FROM:<a@spam.example>", "RCPT TO:<alice@example.test>", "QUIT"],
    ["XCLIENT ADDR=192.0.2.67 NAME=guess.example", "EHLO guess.example",
     "MAIL FROM:<b@guess.example>", "RCPT TO:<nobody1@example.test>",
     "RCPT TO:<nobody2@example.test>", "RCPT TO:<nobody3@example.test>",
     "RCPT TO:<nobody4@example.test>", "RCPT TO:<nobody5@example.test>"],
    ["XCLIENT ADDR=192.0.2.68 NAME=badhelo.example", "HELO a_b@c",
     "MAIL FROM:<c@badhelo.example>", "RCPT TO:<alice@example.test>", "QUIT"],
    ["XCLIENT ADDR=192.0.2.69 NAME=relay.example", "EHLO relay.example",
     "MAIL FROM:<d@relay.example>", "RCPT TO:<user@elsewhere.example>", "QUIT"],
    ["XCLIENT ADDR=192.0.2.70 NAME=pipe.example", "HELO pipe.example",
     "MAIL FROM:<e@pipe.example>\tRCPT TO:<alice@example.test>\tRSET", "QUIT"],
    ["XCLIENT ADDR=192.0.2.71 NAME=drop.example", "EHLO drop.example"],  # lost connection
]


def matches(log: Path, filter_name: str, mode: str, config: Path | None = None) -> int:
    """fail2ban-regex's count of matched lines."""
    args = [require("fail2ban-regex")]
    if config is not None:
        args += ["--config", str(config)]
    out = subprocess.run([*args, str(log), f"{filter_name}[mode={mode}]"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    m = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", out, re.M)
    assert m, out
    return int(m.group(1))


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reference.Instance]:
    yield from reference_postfix(tmp_path_factory, "f2b")


@pytest.mark.interop
def test_stock_postfix_filter_matches_like_postfix(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                                                   tmp_path: Path) -> None:
    base = reference.read_settings(DATA / "main.cf")
    skip = postfix.configure({**base, **SETTINGS})
    run(postfix.port, SESSIONS, postfix.log, skip)
    theirs = tmp_path / "postfix.log"
    theirs.write_text("".join(postfix.log.read_text().splitlines(keepends=True)[skip:]))
    named = server_factory(**{**base, **SETTINGS, "syslog_name": "postfix"}).start()
    run(named.port, SESSIONS, named.log_path)
    default = server_factory(**{**base, **SETTINGS}).start()
    run(default.port, SESSIONS, default.log_path)
    config = tmp_path / "fail2ban"  # the system's fail2ban configuration + our filter
    shutil.copytree("/etc/fail2ban", config)
    shutil.copy(ROOT / "contrib" / "fail2ban" / "filter.d" / "mailgate.conf",
                config / "filter.d" / "mailgate.conf")
    counts = {}
    for mode in MODES:
        want = counts[mode] = matches(theirs, "postfix", mode)
        assert want >= 5, (mode, want)  # every session was caught in Postfix's log
        assert matches(named.log_path, "postfix", mode) == want, mode
        assert matches(default.log_path, "mailgate", mode, config) == want, mode
        assert matches(default.log_path, "postfix", mode) == 0  # why the filter is shipped
    assert counts["aggressive"] > counts["normal"]  # the dropped session: "lost connection"


def test_fail2ban_server_bans_the_offender(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A fail2ban server (its own configuration, socket and pid file; the dummy action, so no
    firewall is touched) bans the client that mailgate keeps rejecting."""
    server_bin, client_bin = require("fail2ban-server"), require("fail2ban-client")
    base = reference.read_settings(DATA / "main.cf")
    mailgate = server_factory(**{**base, **SETTINGS}).start()
    config = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", config)
    shutil.copy(ROOT / "contrib" / "fail2ban" / "filter.d" / "mailgate.conf",
                config / "filter.d" / "mailgate.conf")
    for stale in (config / "jail.d").iterdir():
        stale.unlink()  # only our jail
    banned = tmp_path / "banned"
    (config / "jail.local").write_text(f"""\
[DEFAULT]
enabled = false
[mailgate]
enabled = true
filter = mailgate
mode = more
logpath = {mailgate.log_path}
backend = polling
maxretry = 3
findtime = 600
bantime = 600
action = dummy[target="{banned}"]
""")
    (config / "fail2ban.local").write_text(f"""\
[Definition]
logtarget = {tmp_path / 'fail2ban.log'}
socket = {tmp_path / 'fail2ban.sock'}
pidfile = {tmp_path / 'fail2ban.pid'}
dbfile = :memory:
""")
    sock = str(tmp_path / "fail2ban.sock")
    proc = subprocess.Popen([server_bin, "-f", "-x", "-c", str(config), "-s", sock,
                             "-p", str(tmp_path / "fail2ban.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:  # readiness: the server answers a ping on its socket
            return subprocess.run([client_bin, "-s", sock, "ping"], capture_output=True,
                                  timeout=30).returncode == 0

        wait_until(answers, timeout=60)
        subprocess.run([client_bin, "-c", str(config), "-s", sock, "reload"], check=True,
                       capture_output=True, timeout=60)
        run(mailgate.port, [SESSIONS[1]], mailgate.log_path)  # the dictionary attack

        def banned_192_0_2_67() -> bool:
            out = subprocess.run([client_bin, "-s", sock, "status", "mailgate"],
                                 capture_output=True, text=True, timeout=30).stdout
            return "192.0.2.67" in out.split("Banned IP list:")[-1]

        wait_until(banned_192_0_2_67, timeout=60)
        assert "+192.0.2.67" in banned.read_text()
    finally:
        subprocess.run([client_bin, "-s", sock, "stop"], capture_output=True, timeout=60)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
