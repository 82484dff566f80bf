"""Postfix's SMTP command tokenizer (shared/postfix/tests/smtpd/smtpd_token.*) and extract_addr."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.smtp.tokens import extract_addr, quote_local_part, smtpd_token

SHARED = Path(__file__).resolve().parents[3] / "shared" / "postfix" / "tests" / "smtpd"


def _render(line: str) -> str:
    out = [line]
    for token in smtpd_token(line):
        out.append(f"Token type:  {token.type.value}")
        out.append(f"Token value: {token.value}")
    return "\n".join(out)


@pytest.mark.skipif(not (SHARED / "smtpd_token.in").exists(), reason="shared/ not present")
def test_upstream_token_vectors() -> None:
    lines = (SHARED / "smtpd_token.in").read_text().splitlines()
    expected = (SHARED / "smtpd_token.ref").read_text().rstrip("\n")
    assert "\n".join(_render(line) for line in lines) == expected


@pytest.mark.parametrize(("arg", "address", "illegal"), [
    ("<a@b.example>", "a@b.example", False),
    ("a@b.example", "a@b.example", False),
    ("<>", "", False),
    ("<@route,@other:a@b.example>", "a@b.example", False),
    ('<"a b"@c.example>', "a b@c.example", False),
    ("<a b@c>", "ab@c", True),
    ("<wietse @ porcupine.org>", "wietse@porcupine.org", False),
    ('<"wietse venema" <wietse@porcupine.org>>', "wietse@porcupine.org", False),
    ("<a@b.example (comment)>", "a@b.example", False),
    ("<a@b, c@d>", "a@bc@d", True),
])
def test_extract_addr(arg: str, address: str, illegal: bool) -> None:
    result = extract_addr(arg)
    assert result.illegal is illegal
    if not illegal:
        assert result.address == address


def test_strict_rfc821_requires_brackets() -> None:
    assert extract_addr("a@b.example", strict_rfc821=True).illegal
    assert not extract_addr("<a@b.example>", strict_rfc821=True).illegal


@pytest.mark.parametrize(("address", "external"), [
    ("a@b", "a@b"), ("a b@c", '"a b"@c'), ("a.b@c", "a.b@c"), (".a@c", '".a"@c'),
    ('a"b@c', '"a\\"b"@c'),
])
def test_quote_local_part(address: str, external: str) -> None:
    assert quote_local_part(address) == external
