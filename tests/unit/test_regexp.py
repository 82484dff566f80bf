"""regexp: and pcre: tables against answers observed from Postfix 3.7.11 (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.maps import default_registry
from mailgate.maps.base import MapOptions
from mailgate.maps.regexp import RegexpMap
from mailgate.maps.replacement import ReplacementError, prescan


def _table(tmp_path: Path, kind: str, text: str) -> RegexpMap:
    path = tmp_path / f"t.{kind}"
    path.write_text(text)
    table = default_registry().open(f"{kind}:{path}", MapOptions(utf8=False))
    assert isinstance(table, RegexpMap)
    return table


def _warnings(table: RegexpMap, path: Path) -> list[str]:
    return [w.replace(str(path), "F") for w in table.warnings]


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_dollar_escapes(tmp_path: Path, kind: str) -> None:
    table = _table(tmp_path, kind, "/([0-9])/ PRICE $$5 for $1\n/(b)/ A${1}B\n/(c)/ A$(1)B\n"
                                   "/(m)/ ${1}${1}$$$1\n/(p)/ $01\n/(q)?r/ [$1]\n")
    assert table.lookup("9") == "PRICE $5 for 9"  # `$$5` is no group reference
    assert table.lookup("b") == "AbB"
    assert table.lookup("c") == "AcB"
    assert table.lookup("m") == "mm$m"
    assert table.lookup("p") == "p"
    assert table.lookup("qr") == "[q]"
    assert table.lookup("r") == "[]"  # an unmatched group is empty
    assert table.warnings == []


@pytest.mark.parametrize(("result", "warnings"), [
    ("A${1", [(False, 'truncated macro reference: "A${1"')]),
    ("A$1x $a", [(True, 'non-numeric replacement index "1x"'),
                 (True, 'non-numeric replacement index "a"')]),
    ("$a ${b}", [(True, 'non-numeric replacement index "a"')]),  # ${..} after an error stops
    ("$1x ${1", [(True, 'non-numeric replacement index "1x"'),
                 (False, 'truncated macro reference: "$1x ${1"')]),
    ("$0", [(True, 'out of range replacement index "0"')]),
    ("$4294967296", [(True, 'out of range replacement index "4294967296"')]),
    ("${}", [(False, 'empty macro name: "${}"')]),
    ("x$", [(False, 'empty macro name: "x$"')]),
    ("$-", [(False, 'empty macro name: "$-"')]),
    ("${1)}", [(True, 'non-numeric replacement index "1)"')]),
])
def test_bad_replacements(result: str, warnings: list[tuple[bool, str]]) -> None:
    with pytest.raises(ReplacementError) as exc:
        prescan(result, pcre=True)
    assert exc.value.warnings == warnings


def test_replacement_numbers_wrap_like_atoi() -> None:
    assert prescan("$2147483648", pcre=True).max_sub == 2**64 - 2**31
    assert prescan("$99999999999", pcre=True).max_sub == 1215752191


def test_regexp_is_posix_leftmost_longest(tmp_path: Path) -> None:
    table = _table(tmp_path, "regexp", "/^(a|ab)(c|bcd)(d*)$/ g1=$1 g2=$2 g3=$3\n"
                                       "/[[:digit:]]+x/ digits\n/^..$/ two\n")
    assert table.lookup("abcd") == "g1=a g2=bcd g3="
    assert table.lookup("abc") == "g1=ab g2=c g3="
    assert table.lookup("123x") == "digits"
    assert table.lookup("é") == "two"  # bytes, in the C locale


def test_regexp_rule_errors(tmp_path: Path) -> None:
    table = _table(tmp_path, "regexp", "/(/ bad\n/a{/ brace\n/x/ word $$ $\n/abc/q unknown\n"
                                       "/c/ $1\n!/abc/ neg $1\n/abc/!/b/ unless\nbogus\n")
    assert _warnings(table, tmp_path / "t.regexp") == [
        "regexp map F, line 1: Unmatched ( or \\(",
        "regexp map F, line 2: Unmatched \\{",
        'empty macro name: "word $$ $"',
        "regexp map F, line 3: bad replacement syntax: skipping this rule",
        'regexp map F, line 4: unknown regexp option "q": skipping this rule',
        'regexp map F, line 5: out of range replacement index "1": skipping this rule',
        "regexp map F, line 6: $number found in negative match replacement text: "
        "skipping this rule",
        "regexp map F, line 8: ignoring unrecognized request",
    ]
    assert table.lookup("abc") is None  # /abc/ but not /b/
    assert table.lookup("abcd") is None


def test_regexp_second_pattern_may_use_groups(tmp_path: Path) -> None:
    table = _table(tmp_path, "regexp", "/(a)bc/!/x/ got $1\n/(a)/!!/y/ both $1\n")
    assert table.lookup("abc") == "got a"
    assert table.lookup("abcx") is None
    assert table.lookup("ay") == "both a"


def test_pcre_flags(tmp_path: Path) -> None:
    table = _table(tmp_path, "pcre", "/b/A anchored\n/(a.*)c/U ungr $1\n/^x$/E dollar\n"
                                     "/a.b/s nodotall\n/ab/X obsolete\n/ab/! bang\n")
    assert table.lookup("ab") == "obsolete"  # `A`: no match at offset 1
    assert table.lookup("aabcc") == "ungr aab"  # `U`: lazy
    assert table.lookup("x") == "dollar"
    assert table.lookup("a.b") == "nodotall"
    assert _warnings(table, tmp_path / "t.pcre") == [
        'pcre map F, line 5: ignoring obsolete regexp option "X"',
        'pcre map F, line 6: unknown regexp option "!": skipping this rule',
    ]


def test_pcre_is_byte_mode(tmp_path: Path) -> None:
    """Postfix 3.7 never sets PCRE2_UTF, whatever smtputf8_enable says."""
    table = _table(tmp_path, "pcre", "/^\\w+$/ word\n/^.$/ one\n/^..$/ two\n/^(*UTF)é$/ verb\n"
                                     )
    assert table.lookup("ñandú") is None
    assert table.lookup("é") == "two"
    caseless = _table(tmp_path, "pcre", "/^é$/ e-acute\n")
    assert caseless.lookup("é") == "e-acute"
    assert caseless.lookup("É") is None  # no caseless match outside ASCII
    assert _warnings(table, tmp_path / "t.pcre") == [
        "pcre map F, line 4: error in regex at offset 6: (*VERB) not recognized or malformed"]


def test_delimiter_quirks(tmp_path: Path) -> None:
    regexp = _table(tmp_path, "regexp", ",a.b, comma\n/abc\\\n")
    assert regexp.lookup("A#B") == "comma"
    assert regexp.lookup("abc") == ""  # a final backslash closes a regexp: pattern
    assert any("no replacement text" in w for w in regexp.warnings)
    pcre = _table(tmp_path, "pcre", "/abc\\\n")
    assert _warnings(pcre, tmp_path / "t.pcre") == [
        'pcre map F, line 1: no closing regexp delimiter "/": ignoring this rule']


def test_python_stand_ins_answer_simple_patterns() -> None:
    """Without glibc or libpcre2-8, Python `re` stands in (decision 0028)."""
    from mailgate.maps import regex_engines as eng

    posix = eng._python_posix(b"^(a+)b", eng.REG_EXTENDED | eng.REG_ICASE)
    assert posix.groups == 1 and posix.search(b"AAb") == [(0, 3), (0, 2)]
    assert posix.test(b"AAb") and not posix.test(b"b")
    pcre = eng._python_pcre(b"b", eng.PCRE2_ANCHORED)
    assert pcre.test(b"b") and not pcre.test(b"ab")
    with pytest.raises(eng.RegexError):
        eng._python_pcre(b"(", 0)
