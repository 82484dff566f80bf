"""Start and stop a reference Postfix 3.7 (shared/postfix/reference-postfix.sh) for comparisons.

All settings go into one main.cf fragment with one line per name: each "overriding earlier
entry" warning is a datagram to postlogd, which logs its own start-up warnings to itself; more
than net.unix.max_dgram_qlen (10) of them deadlock the whole instance before it serves.
"""

from __future__ import annotations

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
