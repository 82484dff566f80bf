"""Postfix's mail_addr_find vectors (shared/postfix/tests/global/mail_addr_find.*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.maps import default_registry
from mailgate.maps.addr_find import DEFAULT, find, unquote_local_part

GLOBAL = Path(__file__).resolve().parents[3] / "shared" / "postfix" / "tests" / "global"
pytestmark = pytest.mark.skipif(not GLOBAL.exists(), reason="shared/ not present")


def run_script() -> list[str]:
    out: list[str] = []
    table = None
    for line in (GLOBAL / "mail_addr_find.in").read_text().splitlines():
        if line.startswith("echo "):
            out.append(line[5:])
        elif line.startswith("maps "):
            out.append(line[5:])
            table = default_registry().open(line[5:])
        elif line.startswith("test "):
            assert table is not None
            in_form, query, out_form, strategy, key, *_ = [*line[5:].split(":"), "", ""]
            flags = DEFAULT if strategy == "default" else frozenset(strategy.split("|"))
            internal = unquote_local_part(key) if in_form == "external" else key
            value, ext = find(table, internal, flags, query,
                              is_local=lambda d: d == "localhost.localdomain")
            if value is not None and out_form == "internal":
                value = unquote_local_part(value)
            result = value if value is not None else "(not found)"
            out.append(f"{in_form}:{key} -{query}-> {out_form}:{result} "
                       f"({ext or 'null extension'})")
    return out


def test_mail_addr_find_vectors() -> None:
    expected = (GLOBAL / "mail_addr_find.ref").read_text().splitlines()
    assert run_script() == expected
