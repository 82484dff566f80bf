"""Postfix's namadr_list vectors (shared/postfix/tests/global/namadr_list.*): the `mynetworks`
matcher: `!`, `/file`, `type:table`, `[ipv6]/len`, bad patterns as ERROR."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from mailgate.errors import MapTempError
from mailgate.maps import default_registry
from mailgate.maps.matchlist import HostAddrList

GLOBAL = Path(__file__).resolve().parents[3] / "shared" / "postfix" / "tests" / "global"
pytestmark = pytest.mark.skipif(not GLOBAL.exists(), reason="shared/ not present")


def run_script(tmp_path: Path) -> list[str]:
    """Interpret namadr_list.in (its /tmp/junk file is made in tmp_path instead)."""
    out: list[str] = []
    junk = tmp_path / "junk"
    for line in (GLOBAL / "namadr_list.in").read_text().splitlines():
        if line.startswith("echo "):
            junk.write_text(line.split("echo ", 1)[1].split(" >", 1)[0] + "\n")
            continue
        if not line.strip() or line.startswith("rm "):
            continue
        words = shlex.split(line.replace("/tmp/junk", str(junk)))
        env: dict[str, str] = {}
        if words[0] == "env":
            name, _, value = words[1].partition("=")
            env[name] = value
            words = words[2:]
        assert words[0] == "./namadr_list", line
        patterns, host, addr = words[1], words[2], words[3]
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            def warn(text: str) -> None:
                out.append("./namadr_list: " + text.replace(str(junk), "/tmp/junk"))
            matcher = HostAddrList.build(patterns.split(), default_registry(), "command line",
                                         warn=warn)
            try:
                result = "YES" if matcher.match(host, addr) else "NO"
            except MapTempError:
                result = "ERROR"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        out.append(f"{host}/{addr}: {result}")
    return out


def test_namadr_list_vectors(tmp_path: Path) -> None:
    assert run_script(tmp_path) == (GLOBAL / "namadr_list.ref").read_text().splitlines()
