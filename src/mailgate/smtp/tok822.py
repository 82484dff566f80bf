"""RFC 822 address token trees as Postfix builds them (global/tok822_parse.c, tok822_tree.c).

A faithful port of the parts smtpd's extract_addr() uses: tok822_scan() (string to a flat token
list), tok822_parse() (the right-to-left grouping into address nodes, adding missing commas)
and tok822_internalize() (a token list back to the unquoted internal form). Like Postfix, the
parser is permissive: what it does not understand stays in the tree as loose tokens.
"""

from __future__ import annotations

import itertools

# Token types: an operator is its character code (< 256); the others as in tok822.h.
ATOM, QSTRING, COMMENT, DOMLIT, ADDR, STARTGRP = range(256, 262)
_MINTOK = ATOM
_SPACE = " \t\r\n"  # IS_SPACE_TAB_CR_LF
# tok822_opchar: "|%!" plus LEX_822_SPECIALS; `|`, `%` and `!` are not RFC 822 but real.
_OPCHAR = '|%!()<>@,;:\\".[]'
_DO_WORD = 1  # a word is ok here (a second word in a row means a missing comma)
_DO_GROUP = 2  # inside a `name: ...;` group
_COMMA, _SEMI, _COLON, _LT, _GT = (ord(c) for c in ",;:<>")


class Tok:
    """One token: an operator, a word, a comment, or an address node with a sublist."""

    __slots__ = ("head", "next", "owner", "prev", "tail", "text", "type")

    def __init__(self, type_: int, text: str = "") -> None:
        self.type = type_
        self.text = text
        self.prev: Tok | None = None
        self.next: Tok | None = None
        self.head: Tok | None = None
        self.tail: Tok | None = None
        self.owner: Tok | None = None

    def __repr__(self) -> str:  # for test failures
        name = {ATOM: "atom", QSTRING: "qstring", COMMENT: "comment", DOMLIT: "domlit",
                ADDR: "addr", STARTGRP: "startgrp"}.get(self.type) or repr(chr(self.type))
        return f"{name}({self.text!r})" if self.type != ADDR else f"addr{to_list(self.head)}"


# --- tok822_tree.c: list surgery ---------------------------------------------------------

def _append(t1: Tok, t2: Tok) -> Tok:
    """Insert the list t2 after t1; return the end of the inserted list."""
    nxt = t1.next
    t1.next, t2.prev = t2, t1
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = nxt
    if nxt is not None:
        nxt.prev = t2
    return t2


def _prepend(t1: Tok, t2: Tok) -> Tok:
    """Insert the list t2 before t1; return the end of the inserted list."""
    prev = t1.prev
    if prev is not None:
        prev.next = t2
    t2.prev = prev
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next, t1.prev = t1, t2
    return t2


def _cut_before(tp: Tok) -> None:
    if tp.prev is not None:
        tp.prev.next = None
        tp.prev = None


def _unlink(tp: Tok) -> Tok | None:
    """Take tp out of its list; return its predecessor."""
    prev, nxt = tp.prev, tp.next
    if prev is not None:
        prev.next = nxt
    if nxt is not None:
        nxt.prev = prev
    tp.prev = tp.next = None
    return prev


def _sub_append(t1: Tok, t2: Tok) -> None:
    """Make the list t2 the (empty) sublist of t1."""
    t1.head = t2
    t2.owner = t1
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1
    t1.tail = t2


def to_list(tp: Tok | None) -> list[Tok]:
    out = []
    while tp is not None:
        out.append(tp)
        tp = tp.next
    return out


# --- tok822_scan ----------------------------------------------------------------------------

def _collect(s: str, i: int, stop: str, stop_space: bool) -> tuple[str, int]:
    """The COLLECT macro: copy until a stop character; a backslash takes the next one as is;
    white space becomes a blank."""
    out: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 1
            if i >= n:
                break
            c = s[i]
        elif c in stop or (stop_space and c in _SPACE):
            break
        out.append(" " if c in _SPACE else c)
        i += 1
    return "".join(out), i


def _comment(s: str, i: int) -> tuple[str, int]:
    """tok822_comment: a (possibly nested) comment, kept in its external form."""
    out, level, n = ["("], 1, len(s)
    while i < n:
        c = s[i]
        out.append(c)
        i += 1
        if c == "(":
            level += 1
        elif c == ")":
            level -= 1
            if level == 0:
                break
        elif c == "\\":
            if i >= n:
                break
            out.append(s[i])
            i += 1
    return "".join(out), i


def _atom_type(text: str) -> int:
    """tok822_quote_atom: an atom with a blank, an ASCII control or an operator is quoted."""
    if any(c == " " or ord(c) < 32 or c == "\x7f" or c in _OPCHAR for c in text):
        return QSTRING
    return ATOM


def scan(s: str) -> list[Tok]:
    """tok822_scan: the external-form string as a flat token list (a NUL ends it, as in C)."""
    s = s.split("\0", 1)[0]
    out: list[Tok] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        i += 1
        if ch in _SPACE:
            continue
        if ch == "(":
            text, i = _comment(s, i)
            out.append(Tok(COMMENT, text))
        elif ch in '["':
            text, i = _collect(s, i, "]" if ch == "[" else '"', False)
            i += 1 if i < n else 0  # COLLECT_SKIP_LAST
            out.append(Tok(DOMLIT if ch == "[" else QSTRING, text))
        elif ch != "\\" and ch in _OPCHAR:
            out.append(Tok(ord(ch)))
        else:
            text, i = _collect(s, i - 1, _OPCHAR, True)
            out.append(Tok(_atom_type(text), text))
    for left, right in itertools.pairwise(out):
        left.next, right.prev = right, left
    return out


# --- tok822_parse ---------------------------------------------------------------------------

def _group(left: Tok, right: Tok, add_comma: bool) -> Tok:
    """tok822_group: cluster the tokens between left and right under a new address node, with
    a comma after left to resynchronize if asked; return left."""
    first = left.next
    if left is not right and first is not None and first is not right:
        _cut_before(right)
        _cut_before(first)
        group = Tok(ADDR)
        _sub_append(group, first)
        _append(left, group)
        _append(group, right)
        if add_comma:
            _append(left, Tok(_COMMA))
    return left


def _move_comment(tp: Tok, right: Tok) -> tuple[Tok, Tok]:
    """MOVE_COMMENT_AND_CONTINUE: put the comment tp just before right; (new tp, new right)."""
    prev = _unlink(tp)
    assert prev is not None  # the left sentinel is never a comment
    return prev, _prepend(right, tp)


def _angle_group(tp: Tok, right: Tok) -> tuple[Tok, Tok]:
    """The `>` case: group what follows `>`, then what is between `<` and `>`, then skip the
    phrase before `<`; return (tp, right) to continue from."""
    right = _group(tp, right, True)
    while tp.type and tp.type != _LT:  # SKIP_MOVE_COMMENT
        if tp.type == COMMENT:
            tp, right = _move_comment(tp, right)
            continue
        assert tp.prev is not None
        tp = tp.prev
    _group(tp, right, False)
    while tp.type and (tp.type > 0xFF or chr(tp.type) not in ">;,:"):
        assert tp.prev is not None
        tp = tp.prev
    return tp, tp


def parse(s: str) -> Tok | None:
    """tok822_parse: the address list in s as a token tree (None when s has no tokens).

    Works from right to left; a word right after another word ends an address (a missing
    comma is added), `<...>` and `name: ...;` make address nodes, comments move aside.
    """
    tokens = scan(s)
    if not tokens:
        return None
    head, tail = Tok(0), Tok(0)  # sentinels
    head.next, tokens[0].prev = tokens[0], head
    tokens[-1].next, tail.prev = tail, tokens[-1]
    state, right, tp = _DO_WORD, tail, tokens[-1]
    while tp.type:
        if tp.type == COMMENT:
            tp, right = _move_comment(tp, right)
            continue
        if tp.type == _SEMI:  # right-hand side of a named group
            right = _group(tp, right, True)
            state = _DO_GROUP | _DO_WORD
        elif tp.type == _COLON and state & _DO_GROUP:
            tp.type = STARTGRP
            _group(tp, right, False)
            while tp.type and tp.type != _COMMA:
                assert tp.prev is not None
                tp = tp.prev
            right = tp
            continue
        elif tp.type == _GT:  # right-hand side of <route>
            tp, right = _angle_group(tp, right)
            state |= _DO_WORD
            continue
        elif tp.type in (ATOM, QSTRING, DOMLIT):
            if not state & _DO_WORD:
                right = _group(tp, right, True).next or right
            state &= ~_DO_WORD
        elif tp.type == _COMMA:
            right = _group(tp, right, False)
            state |= _DO_WORD
        else:
            state |= _DO_WORD
        assert tp.prev is not None
        tp = tp.prev
    _group(tp, right, False)
    first = head.next if head.next is not tail else None
    assert tail.prev is not None
    tail.prev.next = None  # drop the sentinels
    if first is not None:
        first.prev = None
    return first


# --- tok822_internalize --------------------------------------------------------------------

def _non_operator(tp: Tok) -> bool:
    return tp.type in (ATOM, QSTRING, COMMENT, DOMLIT, ADDR)


def _append_space(tp: Tok) -> bool:
    """tok822_append_space: a blank after tp? Never inside an address node."""
    nxt = tp.next
    if nxt is None or tp.owner is not None:
        return False
    if tp.type in (_COMMA, STARTGRP) or nxt.type == _LT:
        return True
    return _non_operator(tp) and _non_operator(nxt)


def internalize(tree: Tok | None) -> str:
    """tok822_internalize: a token list as a string, without quoting."""
    out: list[str] = []
    for tp in to_list(tree):
        if tp.type == ADDR:
            out.append(internalize(tp.head))
        elif tp.type in (COMMENT, ATOM, QSTRING):
            out.append(tp.text)
        elif tp.type == DOMLIT:
            out.append(f"[{tp.text}]")
        elif tp.type == STARTGRP:
            out.append(":")
        else:
            out.append(chr(tp.type))
        if _append_space(tp):
            out.append(" ")
    return "".join(out)
