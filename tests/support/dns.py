"""Start and stop the test DNS server (tests/support/dnsserver.py) as a process on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ZONES = ROOT / "tests" / "data" / "dns"
# Names the server never answers, and answers with SERVFAIL (see tests/data/dns/root.zone).
TIMEOUT = ("timeout.mailgate.test", "13.0.0.127.in-addr.arpa", "slowbl.mailgate.test")
SERVFAIL = ("servfail.mailgate.test", "15.0.0.127.in-addr.arpa", "brokenbl.mailgate.test")


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
    """Start the server; returns once it printed its readiness line (`ready PORT`)."""
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
