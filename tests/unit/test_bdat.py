"""Sizes Postfix 3.7.11 reports after BDAT LAST, and its escape() of pipelined input (both
observed on the live reference)."""

from __future__ import annotations

import pytest

from mailgate.server.bdat import crlf_octets
from mailgate.server.session import escape


@pytest.mark.parametrize(("content", "octets"), [
    (b"", 0), (b"abc", 5), (b"abc\n", 5), (b"a\rb", 5), (b"a\nb", 6), (b"a\n.", 6),
    (b"helloabc", 10), (b"abcab", 7),
])
def test_bdat_size_counts_every_line_with_crlf(content: bytes, octets: int) -> None:
    assert crlf_octets(content) == octets


def test_escape_is_postfix_escape() -> None:
    assert escape(b"RCPT TO:<j\xc3\xb6rg@x>\r\n") == "RCPT TO:<j\\303\\266rg@x>\\r\\n"
    assert escape(b"a\\b\t\x01\x7f") == "a\\\\b\\t\\001\\177"
