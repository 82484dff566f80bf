"""Configurations for `mailgate lint` tests: a directory with main.cf, master.cf and tables,
linted in-process; findings as the `--json` objects."""

from __future__ import annotations

import io
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from mailgate.lint.command import run
from mailgate.maps.compiled import compile_source


@dataclass(frozen=True)
class Result:
    status: int
    findings: list[dict[str, object]]

    def located(self) -> set[tuple[str, int, str]]:
        """(file, line, code) of every finding."""
        return {(str(f["file"]), int(str(f["line"])), str(f["code"])) for f in self.findings}

    def codes(self) -> set[str]:
        return {str(f["code"]) for f in self.findings}

    def of(self, code: str) -> list[dict[str, object]]:
        return [f for f in self.findings if f["code"] == code]


def write_config(directory: Path, main_cf: str, master_cf: str | None = None,
                 tables: dict[str, str] | None = None, postmap: tuple[str, ...] = ()) -> Path:
    """main.cf (dedented; `DIR` stands for the directory), master.cf, table files by name,
    and `postmap` the tables to compile (hash: unless `type:` is given)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.cf").write_text(textwrap.dedent(main_cf).replace("DIR", str(directory)))
    if master_cf is not None:
        (directory / "master.cf").write_text(textwrap.dedent(master_cf))
    for name, text in (tables or {}).items():
        (directory / name).write_text(textwrap.dedent(text))
    for spec in postmap:
        kind, _, name = spec.rpartition(":")
        source = directory / name
        compile_source(kind or "hash", str(source), fold_case=True)
        for path in (source, f"{source}.lmdb" if kind == "lmdb" else f"{source}.db"):
            os.utime(path, (1.5e9, 1.5e9))  # built as it was written, not after
    return directory


def lint(directory: Path | None, resolvers: str = "127.0.0.1",
         scratch: Path | None = None) -> Result:
    """Lint `directory` (None: the embedded configuration) with a resolv.conf in `scratch`
    (default: beside the directory) that names `resolvers`, so the machine's own resolver
    plays no part."""
    place = scratch or (directory.parent if directory else None)
    assert place is not None, "the embedded configuration needs a scratch directory"
    conf = place / "resolv.conf"
    conf.write_text("".join(f"nameserver {r}\n" for r in resolvers.split()))
    out = io.StringIO()
    status = run(str(directory) if directory else None, True, out, resolv_conf=str(conf))
    return Result(status, [json.loads(line) for line in out.getvalue().splitlines()])
