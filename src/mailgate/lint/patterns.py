"""regexp:/pcre: patterns written for one domain or address that match more than it."""

from __future__ import annotations

import re

# What may stand before a domain and bound it on the left: the start, a dot, an `@`.
_LEFT_BOUNDS = ("(^|\\.)", "(\\.|^)", "(^|[.@])", "(^|[@.])", "(^|@)", "(@|^)", "^.*\\.",
                "^.*@", ".*\\.", ".*@", ".+\\.", ".+@", "^", "\\.", "@", "[.@]", "[@.]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\\\.|\.))+[A-Za-z]{{2,63}}")
_LOCAL = re.compile(r"(?:[A-Za-z0-9_+-]|\\\.|\.)+@")
_BARE_DOT = re.compile(r"(?<!\\)\.")


def rule_patterns(line: str) -> list[str]:
    """The patterns of one regexp/pcre table line: `[!]/re/flags result`, `/re1/!/re2/ ...`
    and `if [!]/re/`; any non-alphanumeric first character delimits, `\\` escapes it."""
    text = line.strip()
    if text[:5].lower() == "endif":
        return []
    if text[:2].lower() == "if" and not text[2:3].isalnum():
        text = text[2:].strip()
    out: list[str] = []
    while True:
        text = text.lstrip("! \t")
        if not text or text[0].isalnum():
            return out
        pattern, end = _delimited(text)
        if end < 0:
            return out
        out.append(pattern)
        rest = text[end + 1:]
        flags = re.match(r"[A-Za-z]*", rest)
        text = rest[flags.end() if flags else 0:]
        if not text.startswith("!"):
            return out


def _delimited(text: str) -> tuple[str, int]:
    """The text between text[0] and its next unescaped occurrence, and that index (-1)."""
    delimiter = text[0]
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == delimiter:
            return text[1:i], i
        i += 1
    return text[1:], -1


def pattern_problem(pattern: str) -> tuple[str, str] | None:
    """(message, suggestion) when `pattern` is a domain or address written as a regular
    expression that also matches other names: an unescaped `.`, no `$` at the end, or nothing
    that bounds it on the left; None when it is not such a pattern or is right."""
    body, left = pattern, ""
    for bound in _LEFT_BOUNDS:
        if body.startswith(bound):
            body, left = body[len(bound):], bound
            break
    right = body.endswith("$") and not body.endswith("\\$")
    body = body[:-1] if right else body
    local = _LOCAL.match(body)
    domain = body[local.end():] if local else body
    if not _DOMAIN.fullmatch(domain):
        return None
    problems = []
    if _BARE_DOT.search(body):
        problems.append('"." matches any character')
    if not right:
        problems.append('nothing ends it with "$"')
    if local and not left.startswith("^"):
        problems.append('nothing starts it with "^"')
    elif not local and not left:
        problems.append("nothing bounds it on the left")
    if not problems:
        return None
    plain = body.replace("\\", "")
    escaped = _BARE_DOT.sub(r"\\.", body)
    if local:
        better, unbounded = f"^{escaped}$", not left.startswith("^")
    else:
        better, unbounded = f"{left or '(^|[.@])'}{escaped}$", not left
    if unbounded:
        example = f"x{plain}" if local else f"not{plain}"
    elif not right:
        example = f"{plain}.evil.example"
    else:
        example = _BARE_DOT.sub("x", body, count=1).replace("\\", "")
    return (f"/{pattern}/ is meant for {plain} but also matches {example}: "
            f"{', '.join(problems)}", f"write /{better}/")
