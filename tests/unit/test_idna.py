"""midna_domain_to_ascii() through ICU: A-labels and warnings as the live Postfix 3.7 gives
them, the per-process LRU cache (a warning once per conversion), valid_utf8_hostname(), and
glibc's res_hnok() gate before getaddrinfo() asks the DNS."""

from __future__ import annotations

import pytest

from mailgate.dns import idna
from mailgate.dns.idna import IdnaCache, convert, uidna_strerror
from mailgate.dns.names import res_hnok
from mailgate.smtp.hostnames import valid_utf8_hostname

needs_icu = pytest.mark.skipif(not idna.icu_available(), reason="libicuuc not loadable")

PROBLEM = 'midna_domain_to_ascii_create: Problem translating domain "{}" to ASCII form: {}'

# observed from the live reference (check_helo_mx_access with these HELO names)
FAILURES = [
    ("bücher.test.", "malformed ASCII label(s)"),
    ("-bü.test", "UIDNA_ERROR_LEADING_HYPHEN"),
    ("bü-.test", "UIDNA_ERROR_TRAILING_HYPHEN"),
    ("ü.a-.test", "UIDNA_ERROR_TRAILING_HYPHEN"),
    ("-bü-.test", "UIDNA_ERROR_LEADING_HYPHEN,UIDNA_ERROR_TRAILING_HYPHEN"),
    ("bü..test", "UIDNA_ERROR_EMPTY_LABEL"),
    ("xn--zz.bü.test", "UIDNA_ERROR_PUNYCODE"),
    ("ab--cd.bü.test", "UIDNA_ERROR_HYPHEN_3_4"),
    ("ü'.test", "malformed ASCII label(s)"),
    ("\u0301a.bü.test", "UIDNA_ERROR_LEADING_COMBINING_MARK"),
]
CONVERSIONS = [
    ("straße.test", "xn--strae-oqa.test"),  # nontransitional: not strasse.test
    ("bü_x.test", "xn--b_x-hoa.test"),
    ("a\u200db.bü.test", "xn--ab-m1t.xn--b-eha.test"),
    ("אב1.bü.test", "xn--1-zhcd.xn--b-eha.test"),
    ("ｆｕｌｌ.ü.test", "full.xn--tda.test"),
    ("Ü.TEST", "xn--tda.test"),
]


@needs_icu
@pytest.mark.parametrize(("name", "why"), FAILURES)
def test_failures_warn_as_postfix(name: str, why: str) -> None:
    assert convert(name) == (None, PROBLEM.format(name, why))


@needs_icu
@pytest.mark.parametrize(("name", "ascii_name"), CONVERSIONS)
def test_conversions(name: str, ascii_name: str) -> None:
    assert convert(name) == (ascii_name, None)


@needs_icu
def test_transitional_maps_sharp_s() -> None:
    assert convert("straße.test", transitional=True) == ("strasse.test", None)


@needs_icu
def test_long_name_printed_to_100_bytes() -> None:
    name = "ü" * 70 + ".test"
    ascii_name, warning = convert(name)
    assert ascii_name is None
    assert warning == PROBLEM.format("ü" * 50, "UIDNA_ERROR_LABEL_TOO_LONG")


def test_cut_inside_a_character_keeps_the_bytes() -> None:
    # 99 ASCII bytes then a two-byte character: %.100s keeps its first byte only
    warning = convert("a" * 99 + "é" + "\udcff")[1]
    assert warning is not None
    assert warning.endswith('"' + "a" * 99 + "\udcc3" + '" to ASCII form: malformed UTF-8')


def test_malformed_utf8_is_not_given_to_icu() -> None:
    assert convert("bü\udcff.test") == (None, PROBLEM.format("bü\udcff.test", "malformed UTF-8"))


def test_error_names_in_table_order_and_unknown_bits() -> None:
    assert uidna_strerror(0x10 | 0x1) == "UIDNA_ERROR_EMPTY_LABEL,UIDNA_ERROR_TRAILING_HYPHEN"
    assert uidna_strerror(0x2000 | 0x4000 | 0x80) == "UIDNA_ERROR_DISALLOWED,0x6000"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@needs_icu
def test_cache_warns_once_per_conversion() -> None:
    clock = Clock()
    cache = IdnaCache(size=2, clock=clock)
    warnings: list[str] = []
    assert cache.to_ascii("-bü.test", warnings.append) is None
    assert cache.to_ascii("-bü.test", warnings.append) is None  # cached failure: silent
    assert cache.to_ascii("bü.test", warnings.append) == "xn--b-eha.test"
    assert len(warnings) == 1
    cache.lookup("-bü.test")  # most recently used again
    cache.lookup("ü.test")  # evicts bü.test, the least recently used
    assert cache.lookup("-bü.test") == (None, None)
    assert cache.lookup("bü.test") == ("xn--b-eha.test", None)  # converted again
    assert cache.lookup("-bü.test")[1] is None
    clock.now += 101  # the smtpd process that held the cache is gone
    assert cache.lookup("-bü.test")[1] == PROBLEM.format("-bü.test", "UIDNA_ERROR_LEADING_HYPHEN")


@needs_icu
def test_valid_utf8_hostname() -> None:
    warnings: list[str] = []
    cache = IdnaCache()

    def to_ascii(name: str) -> str | None:
        return cache.to_ascii(name, warnings.append)

    assert valid_utf8_hostname("bü.test", to_ascii)
    assert not valid_utf8_hostname("bü..test", to_ascii)
    assert not valid_utf8_hostname("bücher.test.", to_ascii)  # the A-label form ends in a dot
    assert valid_utf8_hostname("ascii.test", to_ascii)
    assert not valid_utf8_hostname("-ascii.test", to_ascii)
    assert not valid_utf8_hostname("", to_ascii)
    assert len(warnings) == 2


@pytest.mark.parametrize(("name", "asked"), [
    ("mx-ok.dom.test.", True), ("a-.example.", True), ("a.-b.example", True),
    ("_a.example", True), ("1.2.3.4.5", True), ("a\\098c.test", True), (".", True),
    ("bücher.dom.test.", False), ("-a.example.", False), ("a*b.example.", False),
    ("a b.example", False), ("a\x7fb.example", False), ("a\\.b.example", False),
    ("a..b", False), ("x" * 64 + ".test", False), ("", False),
])
def test_res_hnok(name: str, asked: bool) -> None:
    """What glibc's getaddrinfo() sends to the DNS (observed with strace); the rest fail
    at once with EAI_NONAME."""
    assert res_hnok(name) is asked
