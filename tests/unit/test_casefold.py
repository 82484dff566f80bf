"""Postfix's key folding (casefold.c), UTF-8 check (valid_utf8_string.c) and printable()."""

from __future__ import annotations

import pytest

from mailgate.maps import MapOptions, default_registry
from mailgate.maps.base import NonUtf8Value
from mailgate.maps.casefold import ascii_lower, fold, printable, valid_utf8


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(("key", "utf8", "want"), [
    ("MÜLLER.STRAßE.Example", True, "müller.strasse.example"),
    ("MÜLLER.STRAßE.Example", False, "mÜller.straße.example"),
    ("ẞig", True, "ssig"),
    ("İstanbul", True, "i\u0307stanbul"),
    ("ıI", True, "ıi"),
    ("ΣΊΣΥΦΟΣ", True, "σίσυφοσ"),
    ("Σίσυφος", True, "σίσυφοσ"),  # final sigma folds to sigma
    ("ǅx", True, "ǆx"),
    ("ＦＵＬＬ", True, "ｆｕｌｌ"),
    ("Kelvin\u212a", True, "kelvink"),
    ("E\u0301", True, "e\u0301"),  # combining marks stay, no normalisation
    ("ASCII.Only", True, "ascii.only"),
    ("ASCII.Only", False, "ascii.only"),
])
def test_fold(key: str, utf8: bool, want: str) -> None:
    assert fold(key, utf8) == want


def test_ascii_lower_leaves_other_bytes() -> None:
    assert ascii_lower(_s(b"AB\xc3\x84\xff")) == _s(b"ab\xc3\x84\xff")


@pytest.mark.parametrize(("raw", "valid"), [
    (b"plain", True), (b"na\xc3\xafve", True), (b"\xef\xbf\xbe", True),  # noncharacter is fine
    (b"\xf4\x8f\xbf\xbf", True), (b"\x01\x7f", True),
    (b"na\xc3ve", False), (b"\x80", False), (b"\xc0\xaf", False), (b"\xe0\x80\x80", False),
    (b"\xed\xa0\x80", False), (b"\xf4\x90\x80\x80", False), (b"\xf8\x88\x80\x80\x80", False),
    (b"\xe2\x82", False), (b"\xff", False),
])
def test_valid_utf8(raw: bytes, valid: bool) -> None:
    assert valid_utf8(_s(raw)) is valid


@pytest.mark.parametrize(("raw", "utf8", "want"), [
    (b"bad\x80key\tB1", True, b"bad?key?B1"),
    (b"trunc\xe2\x82\tB4", True, b"trunc\xe2\x82?B4"),  # a lead byte with continuations stays
    (b"over\xc0\xafx", True, b"over??x"),
    (b"surr\xed\xa0\x80x", True, b"surr\xed\xa0\x80x"),
    (b"k\xc3\xb6nig", True, b"k\xc3\xb6nig"),
    (b"k\xc3\xb6nig", False, b"k??nig"),
])
def test_printable(raw: bytes, utf8: bool, want: bytes) -> None:
    assert printable(_s(raw), utf8) == _s(want)


def test_tables_check_keys_and_values_with_smtputf8() -> None:
    warnings: list[str] = []
    registry = default_registry(MapOptions(utf8=True), warnings.append)
    table = registry.open("inline:{Straße=1, ä=2}")
    assert table.lookup("STRASSE") == "1"
    assert table.lookup("Ä") == "2"
    assert table.lookup(_s(b"x\xff")) is None
    assert warnings == ['inline:{Straße=1, ä=2}: non-UTF-8 key "x\udcff": malformed UTF-8 or '
                        "invalid codepoint"]
    with pytest.raises(NonUtf8Value):
        registry.open("static:v" + _s(b"\xff")).lookup("a")


def test_tables_without_smtputf8_fold_ascii_only() -> None:
    registry = default_registry(MapOptions(utf8=False))
    table = registry.open("inline:{Straße=1, Ä=2, a=3, A=4}")
    assert table.lookup("STRAßE") == "1"
    assert table.lookup("STRASSE") is None
    assert table.lookup("ä") is None
    assert table.lookup("a") == "4"  # a later duplicate replaces an earlier one
    assert registry.open("static:v" + _s(b"\xff")).lookup(_s(b"\xff")) == _s(b"v\xff")


def test_unionmap_folds_when_its_first_member_is_fixed() -> None:
    registry = default_registry(MapOptions(utf8=True))
    union = registry.open("unionmap:{inline:{x=1}, static:s}")
    assert union.fixed and union.fold_case
