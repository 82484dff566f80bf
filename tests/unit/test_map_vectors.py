"""Postfix's own table vectors (shared/postfix/tests/util) replayed as `dict_open` prints them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mailgate.errors import MapError
from mailgate.maps import default_registry

UTIL = Path(__file__).resolve().parents[3] / "shared" / "postfix" / "tests" / "util"
pytestmark = pytest.mark.skipif(not UTIL.exists(), reason="shared/ not present")


def dict_open(spec: str, queries: list[str], cwd: Path) -> str:
    """Emulate `dict_open SPEC read < queries` (the owner= line is left out)."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        table = default_registry().open(spec)
    finally:
        os.chdir(old)
    out = [f"./dict_open: warning: {w}" for w in getattr(table, "warnings", [])]
    for key in queries:
        out.append(f"> get {key}")
        value = table.lookup(key)
        out.append(f"{key}={value}" if value is not None else f"{key}: not found")
    return "\n".join(out) + "\n"


def expected(ref: str) -> str:
    lines = (UTIL / ref).read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("owner=")) + "\n"


def queries(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in (UTIL / name).read_text().splitlines()
            if line.startswith("get ")]


def test_dict_cidr(tmp_path: Path) -> None:
    shutil.copy(UTIL / "dict_cidr.map", tmp_path / "dict_cidr.map")
    assert dict_open("cidr:dict_cidr.map", queries("dict_cidr.in"), tmp_path) == \
        expected("dict_cidr.ref")


def test_miss_endif_cidr(tmp_path: Path) -> None:
    shutil.copy(UTIL / "miss_endif_cidr.map", tmp_path / "miss_endif_cidr.map")
    assert dict_open("cidr:miss_endif_cidr.map", ["1.2.3.5"], tmp_path) == \
        expected("miss_endif_cidr.ref")


def test_inline_cidr(tmp_path: Path) -> None:
    spec = "cidr:{{1.2.3.4 got 1.2.3.4}, {if 4.3.2.0/24}, {!4.3.2.1 not 4.3.2.1}, {endif}}"
    assert dict_open(spec, ["1.2.3.4", "4.3.2.1"], tmp_path) == expected("dict_inline_cidr.ref")


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_dict_regexp_and_pcre(tmp_path: Path, kind: str) -> None:
    name = f"dict_{kind}"
    shutil.copy(UTIL / f"{name}.map", tmp_path / f"{name}.map")
    assert dict_open(f"{kind}:{name}.map", queries(f"{name}.in"), tmp_path) == \
        expected(f"{name}.ref")


@pytest.mark.parametrize(("kind", "ref"), [("regexp", "miss_endif_regexp.ref"),
                                           ("pcre", "miss_endif_pcre.ref")])
def test_miss_endif_regexp(tmp_path: Path, kind: str, ref: str) -> None:
    shutil.copy(UTIL / "miss_endif_re.map", tmp_path / "miss_endif_re.map")
    assert dict_open(f"{kind}:miss_endif_re.map", ["1.2.3.5"], tmp_path) == expected(ref)


def _dict_open_lines(specs: list[tuple[str, list[str]]]) -> str:
    """Several `dict_open` runs; a table that fails to open prints `error:` and no lookups."""
    out = []
    for spec, keys in specs:
        try:
            table = default_registry().open(spec)
        except MapError as exc:
            out.append(f"./dict_open: error: {exc}")
            continue
        for key in keys:
            value = table.lookup(key)
            out += [f"> get {key}", f"{key}={value}" if value is not None else f"{key}: not found"]
    return "\n".join(out) + "\n"


def test_dict_static() -> None:
    assert _dict_open_lines([
        ("static:fooxx", ["foo", "bar"]),
        ("static:{ foo xx ", []),
        ("static:{ foo xx }x", []),
        ("static:{ foo xx }", ["foo", "bar"]),
    ]) == expected("dict_static.ref")


def test_dict_inline() -> None:
    assert _dict_open_lines([
        ("inline:{ }", []),
        ("inline:{ foo = xx }", []),
        ("inline:{ foo=xx }x", []),
        ("inline:{ foo=xx x", []),
        ("inline:{ foo=xx {x=y}x}", []),
        ("inline:{ foo=XX, { bar = lotsa stuff } }", ["foo", "bar", "baz"]),
        ("inline:{ foo=XX, { bar = lotsa stuff }}", ["foo", "bar", "baz"]),
    ]) == expected("dict_inline.ref")


def test_dict_thash_dump(tmp_path: Path) -> None:
    import subprocess
    import sys

    shutil.copy(UTIL / "dict_thash.in", tmp_path / "dict_thash.in")
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", "-fs",
                             "texthash:dict_thash.in"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    warnings = result.stderr.replace("mailgate/postmap:", "postmap:")
    assert warnings + result.stdout == (UTIL / "dict_thash.ref").read_text()
