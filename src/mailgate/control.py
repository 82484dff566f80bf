"""`mailgate start|start-fg|stop|abort|reload|status`: the server run as a service, as postfix(1).

The master's PID is in the queue directory's `master.pid` (written by `serve`). A PID file
whose process is gone, or is not a mailgate master, counts as "not running".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailgate.config.config import Config
from mailgate.config.settings import DeliverySettings, SmtpdSettings
from mailgate.queue.commands import PID_FILE

_NAME = "mailgate"


def master_pid(cfg: Config) -> int | None:
    """The running master's PID, or None."""
    path = Path(DeliverySettings.from_config(cfg).queue_directory) / PID_FILE
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if not any(b"mailgate" in part for part in cmdline) or b"serve" not in cmdline:
        return None  # a PID reused by another program
    return pid


def status(cfg: Config) -> int:
    pid = master_pid(cfg)
    if pid is None:
        print(f"{_NAME}: the mail system is not running", file=sys.stderr)
        return 1
    print(f"{_NAME}: the mail system is running: PID: {pid}", file=sys.stderr)
    return 0


def start(argv: list[str], cfg: Config) -> int:
    """Start `mailgate serve` in the background, in its own session, its output in the queue
    directory's `master.out`; returns once it listens, or with its error when it cannot."""
    if master_pid(cfg) is not None:
        print(f"{_NAME}: fatal: the mail system is already running", file=sys.stderr)
        return 1
    out_path = Path(DeliverySettings.from_config(cfg).queue_directory) / "master.out"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate.cli", "serve", *argv],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = out_path.read_text(errors="replace")
        ready = [x for x in text.splitlines() if x.startswith("mailgate: listening on ")]
        if ready:
            print(f"{_NAME}: starting the mail system: {ready[0].split(': ', 1)[1]}",
                  file=sys.stderr)
            return 0
        if proc.poll() is not None:
            sys.stderr.write(text)
            print(f"{_NAME}: fatal: the mail system did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"{_NAME}: fatal: the mail system did not say it listens", file=sys.stderr)
    return 1


def start_fg(argv: list[str]) -> int:
    """`start-fg`: the server in the foreground (containers, systemd's Type=notify-reload)."""
    os.execv(sys.executable, [sys.executable, "-m", "mailgate.cli", "serve", *argv])
    return 1  # not reached


def send(cfg: Config, signum: int, verb: str, wait: bool) -> int:
    """Signal the master; with `wait`, until it is gone (stop: the sessions' drain time
    and a margin)."""
    pid = master_pid(cfg)
    if pid is None:
        print(f"{_NAME}: fatal: the mail system is not running", file=sys.stderr)
        return 1
    print(f"{_NAME}: {verb} the mail system", file=sys.stderr)
    os.kill(pid, signum)
    if not wait:
        return 0
    deadline = time.monotonic() + SmtpdSettings.from_config(cfg).shutdown_timeout + 30
    while time.monotonic() < deadline:
        if master_pid(cfg) != pid or not Path(f"/proc/{pid}").exists():
            return 0
        time.sleep(0.05)
    print(f"{_NAME}: warning: the master (PID {pid}) is still running", file=sys.stderr)
    return 1


def stop(cfg: Config) -> int:
    """SIGTERM: stop accepting, sessions may finish for smtpd_shutdown_timeout."""
    return send(cfg, signal.SIGTERM, "stopping", wait=True)


def abort(cfg: Config) -> int:
    """SIGKILL to the master (its workers die with it): accepted mail is on disk already;
    sessions in progress are cut."""
    return send(cfg, signal.SIGKILL, "aborting", wait=True)


def reload(cfg: Config) -> int:
    """SIGHUP: the configuration is read again (docs/operations.md)."""
    return send(cfg, signal.SIGHUP, "refreshing", wait=False)
