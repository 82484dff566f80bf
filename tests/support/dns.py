"""Start and stop the test DNS server (tests/support/dnsserver.py) as a process on loopback, and
play the same SMTP sessions (from 127.0.0.x clients) to a reference Postfix and to mailgate."""

from __future__ import annotations

import difflib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ZONES = ROOT / "tests" / "data" / "dns"
# Names the server never answers, and answers with SERVFAIL (see tests/data/dns/root.zone and
# tests/data/dns/random/random.zone).
TIMEOUT = ("timeout.mailgate.test", "13.0.0.127.in-addr.arpa", "slowbl.mailgate.test",
           "timeout.dom.test", "39.0.0.127.in-addr.arpa", "slow.dom.test")
SERVFAIL = ("servfail.mailgate.test", "15.0.0.127.in-addr.arpa", "brokenbl.mailgate.test",
            "servfail.dom.test", "34.0.0.127.in-addr.arpa", "broken.dom.test")


@dataclass
class DnsServer:
    proc: subprocess.Popen[str]
    port: int
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def start(delay: float = 0.0, zones: Path = ZONES, address: str = "127.0.0.1",
          port: int = 0) -> DnsServer:
    """Start the server; returns once it printed its readiness line (`ready PORT`).

    With port 0 the server takes a free UDP port and then binds TCP on the same number, which
    another socket may hold: then it is started again (at most five times)."""
    for attempt in range(5):
        try:
            return _start(delay, zones, address, port)
        except RuntimeError as exc:
            if port or "address already in use" not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")


def _start(delay: float, zones: Path, address: str, port: int) -> DnsServer:
    args = [sys.executable, "-m", "tests.support.dnsserver", "--zones", str(zones),
            "--address", address, "--port", str(port)]
    for name in TIMEOUT:
        args += ["--timeout", name]
    for name in SERVFAIL:
        args += ["--servfail", name]
    if delay:
        args += ["--delay", str(delay)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"DNS server did not start: {line!r} {err[-300:]}")
    if proc.stderr:
        proc.stderr.close()
    return DnsServer(proc, int(line.split()[1]), address)


# --- the same sessions to a reference Postfix and to mailgate ---------------------------------

_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")
Sessions = list[tuple[str, list[str]]]  # (client source address, command lines)


def play(port: int, source: str, lines: list[str]) -> list[str]:
    """One SMTP session from `source`: the greeting, then each line and its reply."""
    from support.dialogue import _Reader

    sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                    source_address=(source, 0))
    reader = _Reader(sock)
    out = ["S: " + x for x in reader.reply()]
    try:
        for line in lines:
            out.append("C: " + line)
            sock.sendall(line.encode() + b"\r\n")
            reply = reader.reply()
            out += ["S: " + _QUEUE_ID.sub("QUEUEID", x) for x in reply]
            if reply[-1] == "<CLOSED>":
                break
    finally:
        sock.close()
    return out


def run(port: int, sessions: Sessions, log: Path, skip: int = 0) -> tuple[list[str], list[str]]:
    """Replies of every session, then the smtpd log lines once each session is logged."""
    from conftest import wait_until
    from support import reference

    replies: list[str] = []
    for done, (source, lines) in enumerate(sessions, 1):
        replies += [*play(port, source, lines), "---"]
        wait_until(lambda n=done: sum("disconnect from" in x for x in reference.smtpd_lines(
            log, skip)) >= n, timeout=30)  # type: ignore[misc]
    return replies, reference.smtpd_lines(log, skip)


def differences(want: tuple[list[str], list[str]], got: tuple[list[str], list[str]]) -> list[str]:
    """Unified diffs of the replies and of the log lines ([] when both are the same)."""
    problems = []
    for name, a, b in (("replies", want[0], got[0]), ("log", want[1], got[1])):
        if a != b:
            problems.append(f"{name}:\n" + "\n".join(
                difflib.unified_diff(a, b, "postfix", "mailgate", lineterm="")))
    return problems


def serve_on_53(address: str, zones: Path = ZONES) -> Iterator[str]:
    """A test DNS server on ADDRESS:53 for a test module (the reference Postfix's resolv.conf
    cannot name a port); the module is skipped when the address cannot be served."""
    import pytest

    try:
        server = start(zones=zones, address=address, port=53)
    except RuntimeError as exc:
        pytest.skip(f"cannot serve DNS on {address}:53 ({exc})")
    try:
        yield server.address
    finally:
        server.stop()


def reference_resolving_at(script: Path, work: Path, address: str, port: int) -> Iterator[Any]:
    """A reference Postfix whose resolv.conf names the test DNS server at ADDRESS (the
    reference script's private mount namespace); stopped at the end of the module. Skipped
    with the reason (failed in CI) without Postfix, unshare(1) or the reference script."""
    import pytest

    from conftest import require

    require("postfix")
    require("unshare")
    if not script.exists():
        pytest.skip(f"{script} not present")
    from support import reference

    resolv = work / "resolv.conf"
    resolv.write_text(f"nameserver {address}\noptions timeout:1 attempts:1\n")
    instance = reference.Instance(script, work / "ref", port, resolv_conf=resolv)
    try:
        yield instance
    finally:
        instance.stop()
