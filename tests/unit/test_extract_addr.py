"""extract_addr() and the tok822 parser against Postfix 3.7.11's readings of malformed addresses.

The expected values were recorded live from the reference Postfix (tests/data/dialogues/main.cf
with the fuzzer's `defaults` fragment, example.test a virtual mailbox domain): `RCPT TO:ARG`
after EHLO and MAIL got `550 5.1.1 <ADDRESS>: Recipient address rejected: User unknown in
virtual mailbox table` (ADDRESS is what extract_addr made of ARG) or `501 5.1.3 Bad recipient
address syntax` (ILLEGAL here); the second column with strict_rfc821_envelopes = yes.
"""

from __future__ import annotations

import pytest

from mailgate.smtp import tok822
from mailgate.smtp.tokens import extract_addr

ILLEGAL = None

# (argument token, address without strict_rfc821_envelopes, address with it)
POSTFIX_3_7_11 = [
    ("<a@example.test>>", "a@example.test", "a@example.test"),
    ("<<a@example.test>>", "a@example.test", "a@example.test"),
    ("<a b@example.test>>", "ab@example.test", "ab@example.test"),  # `>` groups all before it
    ("<a b@example.test>", ILLEGAL, ILLEGAL),  # two words: a missing comma, two addresses
    ('<"quoted"@example.test>>', "quoted@example.test", "quoted@example.test"),
    ("@example.test", "@example.test", ILLEGAL),  # strict: no `<`, and starts with `@`
    ("<@example.test>", "@example.test", ILLEGAL),
    ("<@r1,@r2:a@example.test>", "a@example.test", "a@example.test"),
    ("@r1:a@example.test", "a@example.test", ILLEGAL),
    ("<Name <a@example.test>>", "a@example.test", ILLEGAL),  # strict: a phrase
    ("<a@example.test (comment)>", "a@example.test", ILLEGAL),
    ("<(c)a@example.test>", "a@example.test", ILLEGAL),
    ("<a@example.test, b@example.test>", ILLEGAL, ILLEGAL),
    ("<g: a@example.test;>", "a@example.test", ILLEGAL),  # a named group
    ("<a\\ b@example.test>", "a b@example.test", "a b@example.test"),
    ('<"a b"@example.test>', "a b@example.test", "a b@example.test"),
    ('<"a\\"b"@example.test>', 'a"b@example.test', 'a"b@example.test'),
    ("<a@b@example.test>", "a@b@example.test", "a@b@example.test"),
    ("<a..b@example.test>", "a..b@example.test", "a..b@example.test"),
    ("<a@example.test>junk", ILLEGAL, ILLEGAL),
    ("a@example.test(comment)", "a@example.test", ILLEGAL),
    ("<a@example.test>(c)", "a@example.test", ILLEGAL),
    ("<a@example.test>,<b@example.test>", ILLEGAL, ILLEGAL),
    ("<a%b@example.test>", "a%b@example.test", "a%b@example.test"),
    ("<a!b@example.test>", "a!b@example.test", "a!b@example.test"),
    ("<a|b@example.test>", "a|b@example.test", "a|b@example.test"),
    ("<a[1]@example.test>", ILLEGAL, ILLEGAL),  # a word, then a domain literal
    ("<a:b@example.test>", "a:b@example.test", "a:b@example.test"),
    ("<a;b@example.test>", ILLEGAL, ILLEGAL),
    ("<a @ example . test>", "a@example.test", "a@example.test"),
    ('<"a" "b"@example.test>', ILLEGAL, ILLEGAL),
    ("<a@example.test>b@example.test>", ILLEGAL, ILLEGAL),
    ("<x <a@example.test> y>", ILLEGAL, ILLEGAL),
]


@pytest.mark.parametrize(("arg", "loose", "strict"), POSTFIX_3_7_11,
                         ids=[x[0] for x in POSTFIX_3_7_11])
def test_extract_addr_as_postfix(arg: str, loose: str | None, strict: str | None) -> None:
    for strict_rfc821, want in ((False, loose), (True, strict)):
        got = extract_addr(arg, strict_rfc821)
        assert (None if got.illegal else got.address) == want, (arg, strict_rfc821)


@pytest.mark.parametrize(("arg", "address"), [
    # Postfix 3.7.11 `VRFY <unbalanced` -> `550 5.1.1 <<unbalanced>: ... User unknown in local
    # recipient table`: VRFY does not refuse an unbalanced token, the parser keeps the `<`.
    ("<unbalanced", "<unbalanced"),
    ("<a@example.test>>", "a@example.test"),
    # These Postfix refuses later (smtpd_check_addr, the empty address, the token error):
    # extract_addr itself takes them.
    ("<a@example.test>>>", "a@example.test>"),
    ('"<a@example.test>"', "<a@example.test>"),
    ("<>>", ""),
    ("<(unclosed a@example.test>", ""),
    ("<>", ""),
])
def test_extract_addr_keeps(arg: str, address: str) -> None:
    assert extract_addr(arg) == extract_addr(arg, False)
    got = extract_addr(arg)
    assert not got.illegal and got.address == address


def test_parse_adds_the_missing_comma() -> None:
    tree = tok822.to_list(tok822.parse("a b@c"))
    assert [t.type for t in tree] == [tok822.ADDR, ord(","), tok822.ADDR]
    assert tok822.internalize(tree[0]) == "a, b@c"


def test_parse_phrase_route_and_comment() -> None:
    tree = tok822.to_list(tok822.parse("Name (c) <a@b> (d)"))
    assert [t.type for t in tree] == [tok822.ATOM, tok822.COMMENT, ord("<"), tok822.ADDR,
                                      ord(">"), tok822.COMMENT]
    assert tok822.internalize(tree[3].head) == "a@b"


def test_scan_quotes_and_escapes() -> None:
    tokens = tok822.scan('"a\\"b" x\\ y [1\\]2] (n(e)st) |')
    assert [(t.type, t.text) for t in tokens] == [
        (tok822.QSTRING, 'a"b'), (tok822.QSTRING, "x y"), (tok822.DOMLIT, "1]2"),
        (tok822.COMMENT, "(n(e)st)"), (ord("|"), "")]
    assert tok822.parse("   ") is None
