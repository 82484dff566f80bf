"""The replay's reports: plain text, and one self-contained HTML page in the style of
`mailgate report --html` (its CSS and bar charts)."""

from __future__ import annotations

from datetime import datetime
from html import escape

from mailgate.replay.simulate import rule_text
from mailgate.replay.summary import Row, Summary
from mailgate.report.html import COLORS, CSS, hbars

_CHANGES = (("refused", "would now be refused (possible false positives)"),
            ("accepted", "would now be accepted"),
            ("same", "same answer (accepted, or refused both times)"),
            ("unknown", "not evaluated (the record lacks what a check needs)"))


def _when(value: float | None) -> str:
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _rule_rows(s: Summary) -> list[tuple[str, int, int]]:
    """(restriction, refusals then, refusals now), the most changed first."""
    names = set(s.rules_then) | set(s.rules_now)
    return sorted(((n, s.rules_then[n], s.rules_now[n]) for n in names),
                  key=lambda r: (-abs(r[2] - r[1]), r[0]))


def _row_text(row: Row, now_side: bool) -> str:
    outcome = row.now.outcome if now_side else row.then
    assert outcome is not None
    return (f"  {row.when()}  {row.client.namaddr}  from=<{row.sender}> "
            f"to=<{row.recipient or ''}>\n      {'now' if now_side else 'then'}: "
            f"{outcome.code} {outcome.dsn} {outcome.text}\n      by {rule_text(outcome.rule)}")


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", title, "-" * len(title), *(lines or ["  none"])]


def text(s: Summary, config: str, top: int = 10) -> str:
    """The plain-text report."""
    out = [f"mailgate replay: {_when(s.first)} .. {_when(s.last)} against {config}",
           f"{s.transactions} transactions, {s.recipients} recipients", ""]
    out += [f"  {s.changes[key]:>8}  {label}" for key, label in _CHANGES]
    out += _section("Refusals by restriction (then -> now)",
                    [f"  {a:>8} -> {b:<8} {name}" for name, a, b in _rule_rows(s)[:top * 2]])
    out += _section("Newly refused, by rule", [f"  {n:>8}  {k}" for k, n in s.entries.top(top)])
    out += _section("Newly refused: top clients",
                    [f"  {n:>8}  {k}" for k, n in s.clients.top(top)])
    out += _section("Newly refused: top sender domains",
                    [f"  {n:>8}  {k}" for k, n in s.sender_domains.top(top)])
    out += _section(f"Recipients that would now be refused (first {len(s.refused)})",
                    [_row_text(r, True) for r in s.refused])
    out += _section(f"Recipients that would now be accepted (first {len(s.accepted)})",
                    [_row_text(r, False) for r in s.accepted])
    out += _section("Not evaluated, why", [f"  {n:>8}  {k}" for k, n in s.reasons.top(top)])
    out += ["", f"({s.cached} of {s.transactions} transactions had the facts of one replayed "
            "before: evaluated once)"]
    return "\n".join(out) + "\n"


def _table(rows: list[Row], now_side: bool) -> str:
    if not rows:
        return "<p>None.</p>"
    body = []
    for row in rows:
        outcome = row.now.outcome if now_side else row.then
        assert outcome is not None
        body.append(f"<tr><td>{escape(row.when())}</td><td>{escape(row.client.namaddr)}</td>"
                    f"<td>{escape(row.sender)}</td><td>{escape(row.recipient or '')}</td>"
                    f"<td>{outcome.code} {escape(outcome.dsn)} {escape(outcome.text)}</td>"
                    f"<td>{escape(rule_text(outcome.rule))}</td></tr>")
    return ("<table><tr><th>time</th><th>client</th><th>sender</th><th>recipient</th>"
            f"<th>reply {'now' if now_side else 'then'}</th><th>rule</th></tr>"
            + "".join(body) + "</table>")


def html(s: Summary, config: str, top: int = 10) -> str:
    """The HTML page."""
    period = f"{_when(s.first)} .. {_when(s.last)}"
    tiles = "".join(f'<div class="tile{" reject" if key == "refused" else ""}" '
                    f'id="change-{key}"><b>{s.changes[key]}</b><span>{escape(label)}'
                    "</span></div>" for key, label in _CHANGES)
    rules = "".join(f'<tr><td>{escape(name)}</td><td class="n">{a}</td><td class="n">{b}'
                    f"</td></tr>" for name, a, b in _rule_rows(s)[:top * 2])
    return "".join((
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>mailgate replay {escape(period)}</title><style>{CSS}</style></head><body>",
        f"<h1>mailgate replay against {escape(config)}</h1>",
        f'<div class="period">{escape(period)}: {s.transactions} transactions, '
        f"{s.recipients} recipients</div>", f'<div class="tiles">{tiles}</div>',
        "<h2>Refusals by restriction, then and now</h2>",
        "<table><tr><th>restriction</th><th>then</th><th>now</th></tr>" + rules + "</table>"
        if rules else "<p>None.</p>",
        '<div class="grid"><div><h2>Newly refused, by rule</h2>',
        hbars("by-rule", s.entries.top(top)),
        "</div><div><h2>Newly refused: top clients</h2>",
        hbars("top-clients", s.clients.top(top), COLORS[2]), "</div></div>",
        "<h2>Newly refused: top sender domains</h2>",
        hbars("top-sender-domains", s.sender_domains.top(top), COLORS[1]),
        "<h2>Recipients that would now be refused</h2>", _table(s.refused, True),
        "<h2>Recipients that would now be accepted</h2>", _table(s.accepted, False),
        "<h2>Not evaluated</h2>", hbars("not-evaluated", s.reasons.top(top), COLORS[6]),
        "</body></html>\n"))
