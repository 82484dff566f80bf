"""Start and stop policy servers for tests: the scripted one (support/policyserver.py) and
`mailgate policyd`. Both report readiness on stdout; both are stopped by their PID."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("policyserver.py")


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


class Scripted:
    """The scripted policy server: rules in a JSON file (changed at will), requests recorded."""

    def __init__(self, root: Path, rules: list[list[str]] | None = None,
                 default: str = "DUNNO", port: int = 0, unix: Path | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.rules_path = root / "rules.json"
        self.record_path = root / "requests.jsonl"
        self.record_path.write_text("")
        self.port, self.unix = port, unix
        self.proc: subprocess.Popen[str] | None = None
        self.set_rules(rules or [], default)

    def set_rules(self, rules: list[list[str]], default: str = "DUNNO") -> None:
        self.rules_path.write_text(json.dumps({"rules": rules, "default": default}))

    def start(self) -> Scripted:
        _stop(self.proc)  # a crashed earlier run: its pipes
        args = [sys.executable, str(SCRIPT), "--rules", str(self.rules_path),
                "--record", str(self.record_path)]
        args += ["--unix", str(self.unix)] if self.unix else ["--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"policy server did not start: {line!r}")
        if not self.unix:
            self.port = int(line.split()[1])
        return self

    @property
    def endpoint(self) -> str:
        return f"unix:{self.unix}" if self.unix else f"inet:127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, object]]:
        return [json.loads(x) for x in self.record_path.read_text().splitlines() if x]

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


class Policyd:
    """A running `mailgate policyd -c ROOT/etc` listening on an OS-chosen port."""

    def __init__(self, root: Path, main_cf: str) -> None:
        self.root = root
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "main.cf").write_text(main_cf)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    def log(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return [x.split(": ", 1)[1] for x in self.log_path.read_text().splitlines()
                if "/policyd[" in x]

    def start(self) -> Policyd:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "policyd", "-c", str(self.root / "etc")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "mailgate policyd: listening on ..."
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() else ""
            self.stop()
            raise RuntimeError(f"mailgate policyd did not start: {line!r} {err}")
        self.port = int(m.group(1))
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None
