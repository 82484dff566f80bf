"""Postfix's key folding and UTF-8 checks for tables (casefold.c, valid_utf8_string.c, printable.c).

Strings hold the bytes of keys decoded as UTF-8 with `surrogateescape`, so a byte that is not
part of valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF) is a
lone surrogate U+DC80..U+DCFF, and "valid UTF-8" is "encodes to UTF-8 strictly".

With `smtputf8_enable = yes` Postfix folds a non-ASCII key with ICU's full case folding
(`U_FOLD_CASE_DEFAULT`: sharp s → ss, U+0130 → i + U+0307, final sigma → sigma); Python's
`str.casefold()` is the same CaseFolding.txt C+F mapping, and gives the same answer as the
ICU 72 that Debian's Postfix 3.7 links for every code point (decision 0025). With
`smtputf8_enable = no` only ASCII is folded.
"""

from __future__ import annotations

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def ascii_lower(text: str) -> str:
    """Postfix lowercase(): A-Z to a-z, every other character (and byte) unchanged."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def valid_utf8(text: str) -> bool:
    """Postfix valid_utf8_string(): the key's bytes are well-formed UTF-8 (RFC 3629)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fold(text: str, utf8: bool) -> str:
    """Postfix casefold() of a valid key: ICU full case folding with `utf8`, else ASCII only.

    The caller checks validity first (`valid_utf8`); an invalid key is never folded with utf8.
    """
    if text.isascii():
        return text.lower()
    return text.casefold() if utf8 else text.translate(_ASCII_LOWER)


def printable(text: str, utf8: bool, replacement: str = "?") -> str:
    """Postfix printable() as msg(3) applies it to every logged line: printable ASCII stays; with
    `utf8`, a lead byte 0xC2..0xFE followed by continuation bytes stays (even if not well-formed);
    every other byte becomes `replacement`."""
    if text.isascii() and text.isprintable():
        return text
    data = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ch = data[i]
        if 0x20 <= ch < 0x7F:
            out.append(ch)
        elif utf8 and 194 <= ch <= 254 and i + 1 < n and 128 <= data[i + 1] < 192:
            j = i + 1
            while j < n and 128 <= data[j] < 192:
                j += 1
            out += data[i:j]
            i = j
            continue
        else:
            out += replacement.encode()
        i += 1
    return out.decode("utf-8", "surrogateescape")
