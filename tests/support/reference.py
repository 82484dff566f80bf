"""Start and stop a reference Postfix 3.7 (shared/postfix/reference-postfix.sh) for comparisons.

All settings go into one main.cf fragment with one line per name: each "overriding earlier
entry" warning is a datagram to postlogd, which logs its own start-up warnings to itself; more
than net.unix.max_dgram_qlen (10) of them deadlock the whole instance before it serves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def merged_fragment(path: Path, *layers: dict[str, str]) -> Path:
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    path.write_text("".join(f"{name} = {value}\n" for name, value in merged.items()))
    return path


def read_settings(main_cf: Path) -> dict[str, str]:
    out = {}
    for line in main_cf.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def start(script: Path, directory: Path, port: int, fragment: Path,
          hostname: str = "mx.example.test") -> None:
    subprocess.run([str(script), "start", "--dir", str(directory), "--port", str(port),
                    "--hostname", hostname, "--main-cf", str(fragment)],
                   check=True, timeout=120, stdout=subprocess.DEVNULL)


def stop(script: Path, directory: Path) -> None:
    subprocess.run([str(script), "stop", "--dir", str(directory)], timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Instance:
    """One reference Postfix reconfigured between tests with `postconf -e`/`-X` and a
    reload (much faster than a restart; no duplicate-entry warnings)."""

    def __init__(self, script: Path, directory: Path, port: int,
                 hostname: str = "mx.example.test", resolv_conf: Path | None = None) -> None:
        self.script, self.directory, self.port = script, directory, port
        extra = ["--resolv-conf", str(resolv_conf)] if resolv_conf else []
        subprocess.run([str(script), "start", "--dir", str(directory), "--port", str(port),
                        "--hostname", hostname, *extra], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        self.etc = directory / "etc"
        self.log = directory / "maillog"
        self.current: dict[str, str] = {"max_idle": "1s"}  # idle smtpd processes go soon
        subprocess.run(["postconf", "-c", str(self.etc), "-e", "max_idle=1s"], check=True,
                       timeout=60)

    def configure(self, settings: dict[str, str], timeout: float = 30.0) -> int:
        """Apply `settings` (and drop the previous test's others); returns the log offset
        (in lines) where this configuration's lines start."""
        import re
        import time

        settings = {"max_idle": "1s", **settings}
        self._wait_no_smtpd(timeout)  # so that no process of the old configuration answers
        gone = [name for name in self.current if name not in settings]
        if gone:
            subprocess.run(["postconf", "-c", str(self.etc), "-X", *gone], check=True,
                           timeout=60)
        subprocess.run(["postconf", "-c", str(self.etc), "-e",
                        *(f"{name}={value}" for name, value in settings.items())],
                       check=True, timeout=60)
        self.current = dict(settings)
        for value in settings.values():
            for table in re.findall(r"\b(?:hash|btree|lmdb):(/\S+?)(?=[,\s]|$)", value):
                subprocess.run(["postmap", "-c", str(self.etc), table], check=True, timeout=60)
        before = self._reloads()
        subprocess.run(["postfix", "-c", str(self.etc), "reload"], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self._reloads() <= before:
            if time.monotonic() > deadline:
                raise RuntimeError("the reference Postfix did not reload")
            time.sleep(0.05)
        return len(self.log.read_text(errors="replace").splitlines())

    def _wait_no_smtpd(self, timeout: float) -> None:
        import os
        import time

        spool = str((self.directory / "spool").resolve())
        deadline = time.monotonic() + timeout
        while True:
            alive = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if (Path(f"/proc/{pid}/comm").read_text().strip() == "smtpd"
                            and os.readlink(f"/proc/{pid}/cwd").startswith(spool)):
                        alive.append(pid)
                except OSError:
                    continue
            if not alive or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def _reloads(self) -> int:
        return self.log.read_text(errors="replace").count("reload -- version") \
            if self.log.exists() else 0

    def stop(self) -> None:
        stop(self.script, self.directory)


_SMTPD = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [^/]+/smtpd\[\d+\]: (.*)$")
_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")


def smtpd_lines(log: Path, skip: int = 0) -> list[str]:
    """The smtpd lines of a mail log (from line `skip` on), without the syslog prefix, queue
    ids as QUEUEID; duplicate-entry warnings left out."""
    out = []
    for line in log.read_text(errors="replace").splitlines()[skip:] if log.exists() else []:
        m = _SMTPD.match(line)
        if m and "overriding earlier entry" not in m.group(1):
            out.append(_QUEUE_ID.sub("QUEUEID", m.group(1)))
    return out
