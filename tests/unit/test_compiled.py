"""Compiled hash:/btree:/lmdb: tables: build, lookups, case folding, atomic replace and reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailgate.errors import MapConfigError
from mailgate.maps import MapOptions, default_registry
from mailgate.maps.base import ReloadingMap, Utf8Map
from mailgate.maps.compiled import CompiledMap, compile_source


def test_build_and_lookup(tmp_path: Path) -> None:
    src = tmp_path / "access"
    src.write_text("Alice@Example.COM OK\nexample.com REJECT go  away \n# c\n1.2.3 REJECT net\n"
                   "example.com DUNNO duplicate\nnovalue\n")
    path, warnings = compile_source("hash", str(src), fold_case=True)
    assert path == f"{src}.db"
    assert warnings == [f'{src}.db: duplicate entry: "example.com"',
                        # postmap(1) says no "-- ignoring this line" here (dict_thash does)
                        f"{src}, line 6: expected format: key whitespace value"]
    table = default_registry().open(f"hash:{src}")
    assert table.lookup("ALICE@example.com") == "OK"
    assert table.lookup("example.com") == "REJECT go  away"
    assert table.lookup("1.2.3") == "REJECT net"
    assert table.lookup("1.2") is None


def test_no_folding_with_f(tmp_path: Path) -> None:
    src = tmp_path / "access"
    src.write_text("MiXeD value\n")
    compile_source("btree", str(src), fold_case=False)
    table = default_registry().open(f"btree:{src}", MapOptions(fold_case=False))
    assert table.lookup("MiXeD") == "value"
    assert table.lookup("mixed") is None


def test_replacement_is_atomic_and_picked_up(tmp_path: Path) -> None:
    src = tmp_path / "access"
    src.write_text("a 1\n")
    compile_source("hash", str(src), fold_case=True)
    now = [0.0]
    table = default_registry().open_reloading(f"hash:{src}", clock=lambda: now[0])
    assert isinstance(table, ReloadingMap) and isinstance(table.table, Utf8Map)
    assert isinstance(table.table.table, CompiledMap)
    assert table.lookup("a") == "1"
    src.write_text("a 2\nb 3\n")
    compile_source("hash", str(src), fold_case=True)
    assert table.lookup("a") == "1"  # checked at most once a second: still the old mapping
    now[0] = 1.5
    assert (table.lookup("a"), table.lookup("b")) == ("2", "3")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_missing_or_foreign_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(MapConfigError, match="open database"):
        default_registry().open(f"hash:{tmp_path / 'nope'}")
    (tmp_path / "bdb.db").write_bytes(b"\0" * 64)
    with pytest.raises(MapConfigError, match="not a mailgate compiled table"):
        default_registry().open(f"hash:{tmp_path / 'bdb'}")


def test_many_keys(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_text("".join(f"key{i}.example value{i}\n" for i in range(20000)))
    compile_source("lmdb", str(src), fold_case=True)
    table = default_registry().open(f"lmdb:{src}")
    assert all(table.lookup(f"KEY{i}.example") == f"value{i}" for i in range(0, 20000, 7))
    assert table.lookup("key20000.example") is None


def test_postmap_incremental_and_delete(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "access"
    src.write_text("a 1\nb 2\n")

    def postmap(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", *args],
                              input=stdin, capture_output=True, text=True, timeout=60)

    assert postmap(f"hash:{src}").returncode == 0
    assert postmap("-i", f"hash:{src}", stdin="C 3\na 10\n").returncode == 0
    assert postmap("-q", "c", f"hash:{src}").stdout == "3\n"
    assert postmap("-q", "a", f"hash:{src}").stdout == "10\n"
    assert postmap("-d", "b", f"hash:{src}").returncode == 0
    assert postmap("-q", "b", f"hash:{src}").returncode == 1
    assert postmap("-d", "b", f"hash:{src}").returncode == 1
    assert postmap("-i", f"texthash:{src}").returncode == 1  # not a compiled table
