"""cidr: tables against answers observed from Postfix 3.7.11's `postmap -q` (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.maps.base import MapOptions
from mailgate.maps.cidr import PatternError, open_cidr, parse_cidr, parse_network

TABLE = """\
3.91.175.0/24 v4-net
::ffff:0:0/96 mapped-v6
2001:DB8::/32 upper-v6
[10.0.0.0]/8 bracket-net
[192.168.1.1] bracket-host
::1.2.3.4 embedded
::/0 allv6
0.0.0.0/0 allv4
"""


@pytest.fixture()
def table(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "t.cidr"
    path.write_text(TABLE)
    return open_cidr(str(path), MapOptions())


@pytest.mark.parametrize(("key", "answer"), [
    ("3.91.175.175", "v4-net"),
    ("[3.91.175.175]", None),  # a bracketed key is not an address to cidr_match_execute()
    ("[10.1.2.3]", None),
    ("[::1]", None),
    ("10.1.2.3", "bracket-net"),  # brackets in the table are fine
    ("192.168.1.1", "bracket-host"),
    ("::ffff:160.96.154.127", "mapped-v6"),  # IPv6: only IPv6 rules, never the IPv4 ones
    ("::FFFF:160.96.154.127", "mapped-v6"),
    ("::ffff:0:1.2.3.4", "allv6"),
    ("::1.2.3.4", "embedded"),
    ("2001:DB8::1", "upper-v6"),
    ("fe80::1%eth0", None),  # no zone ids in inet_pton()
    ("01.2.3.4", None),  # nor leading zeros
    ("1.2.3", None),
    ("1.2.3.256", None),
    ("1.2.3.4/32", None),
    (" 1.2.3.4", None),
    ("", None),
    ("host.example", None),
    ("1.2.3.4\0junk", "allv4"),  # the C string ends at the NUL
])
def test_lookup_keys_as_postfix(table, key: str, answer: str | None) -> None:  # type: ignore[no-untyped-def]
    assert table.lookup(key) == answer


@pytest.mark.parametrize(("pattern", "why"), [
    ("fe80::1%eth0", 'bad address pattern: "fe80::1%eth0"'),
    ("fe80::1%eth0/64", 'bad network value in "fe80::1%eth0/64"'),
    ("01.2.3.4", 'bad address pattern: "01.2.3.4"'),
    ("zz/99", 'bad mask length in "zz/99"'),  # the mask is checked before the address
    ("zz/", 'bad mask value in "zz/"'),
    ("1.2.3.4/+8", 'bad mask value in "1.2.3.4/+8"'),
    ("[1.2.3.0]/", 'bad mask value in "1.2.3.0/"'),  # messages show the pattern unbracketed
    ("[]", 'bad address pattern: ""'),
    ("[]/8", 'bad network value in "/8"'),
    ("[1.2.3.4]/33", 'bad mask length in "1.2.3.4/33"'),
    ("[1.2.3.4", "missing ']' character after \"[1.2.3.4\""),
    ("[[1.2.3.4]]", 'garbage after "[[1.2.3.4]"'),
    ("1.2.3.4/264", 'non-null host address bits in "1.2.3.4/264", perhaps you should use '
                    '"1.0.0.0/8" instead'),  # the length is kept in an unsigned char
    ("1.2.3.4/4294967295", 'bad mask length in "1.2.3.4/4294967295"'),
    ("1.2.3.4/99999999999999999999", 'bad mask length in "1.2.3.4/99999999999999999999"'),
    ("::ffff:1.2.3.4/96", 'non-null host address bits in "::ffff:1.2.3.4/96", perhaps you '
                          'should use "::ffff:0.0.0.0/96" instead'),
])
def test_bad_patterns_say_what_postfix_says(pattern: str, why: str) -> None:
    with pytest.raises(PatternError) as exc:
        parse_cidr(pattern)
    assert str(exc.value) == why


def test_odd_but_valid_patterns() -> None:
    assert str(parse_network("1.2.3.0/4294967320")) == "1.2.3.0/24"
    assert str(parse_network("::/4294967424")) == "::/128"
    assert str(parse_network("[1.2.3.0/24]")) == "1.2.3.0/24"
    assert str(parse_network("1.2.3.0/024")) == "1.2.3.0/24"


def test_rule_warnings_as_postfix(tmp_path: Path) -> None:
    path = tmp_path / "w.cidr"
    path.write_text(" 1.2.3.4 first\nbogus\n!  result41 \n1.2.3.4\nif 1.2.3.4 extra\n"
                    "endif extra\nendif\nifé 1.2.3.4\nendiffy 1.2.3.4\nIF 9.9.9.9\n"
                    "9.9.9.9 in\n")
    table = open_cidr(str(path), MapOptions())
    where = f"cidr map {path}"
    assert table.warnings == [
        f'{path}: logical line must not start with whitespace: " 1.2.3.4 first"',
        f'{where}, line 2: bad address pattern: "bogus": skipping this rule',
        f'{where}, line 3: bad address pattern: "result41": skipping this rule',
        f"{where}, line 4: no lookup result: skipping this rule",
        f'{where}, line 5: bad address pattern: "1.2.3.4 extra": skipping this rule',
        f"{where}, line 6: garbage after ENDIF: skipping this rule",
        f"{where}, line 7: ENDIF without IF: skipping this rule",
        f'{where}, line 8: bad address pattern: "é 1.2.3.4": skipping this rule',
        f'{where}, line 9: bad address pattern: "endiffy": skipping this rule',
        f"{where}, line 10: IF has no matching ENDIF",
    ]
    assert table.lookup("9.9.9.9") == "in"
    assert table.lookup("9.9.9.8") is None
