"""The HTML report: one self-contained page (inline CSS and SVG, no script, no network) with
the totals, rejects per hour by restriction, and the top offenders as bar charts."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from html import escape

from mailgate.report.attacks import Finding
from mailgate.report.blocks import RESTRICTION
from mailgate.report.summary import Summary

COLORS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f")
CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.period{color:#666;margin-bottom:16px}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:110px}
.tile b{display:block;font-size:24px}.tile span{color:#666;font-size:13px}
.tile.reject b{color:#d62728}
svg{background:#fff;border:1px solid #ddd;border-radius:6px}
svg text{font-size:12px;fill:#222}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:4px 10px;
text-align:left;font-size:13px}td.n{text-align:right}
pre{background:#fff;border:1px solid #ddd;padding:10px;font-size:13px;overflow-x:auto}
.grid{display:flex;flex-wrap:wrap;gap:24px}
"""


def _tiles(s: Summary) -> str:
    items = (("received", s.received, ""), ("delivered", s.delivered, ""),
             ("deferred", s.deferred, ""), ("bounced", s.bounced, ""),
             ("rejected", s.rejected, "reject"), ("reject warnings", s.warned, ""),
             ("held", s.held, ""), ("discarded", s.discarded, ""),
             ("connections", s.connections, ""))
    return '<div class="tiles">' + "".join(
        f'<div class="tile {cls}" id="total-{name.replace(" ", "-")}"><b>{value}</b>'
        f"<span>{escape(name)}</span></div>" for name, value, cls in items) + "</div>"


def _buckets(hourly: Counter[tuple[datetime, str]]) -> tuple[list[datetime], timedelta, str]:
    hours = sorted({h for h, _ in hourly})
    if not hours:
        return [], timedelta(hours=1), "%H:00"
    step = timedelta(hours=1) if hours[-1] - hours[0] <= timedelta(hours=72) else timedelta(days=1)
    start = hours[0] if step.days == 0 else hours[0].replace(hour=0)
    out: list[datetime] = []
    t = start
    while t <= hours[-1] and len(out) < 2000:
        out.append(t)
        t += step
    return out, step, ("%m-%d %H:00" if step.days == 0 else "%Y-%m-%d")


def _nice(peak: int) -> int:
    """The top of the scale: four equal whole steps of 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times
    a power of ten, the smallest that reaches the peak."""
    unit = 1
    while True:
        for factor in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            step = factor * unit
            if step == int(step) and 4 * step >= peak:
                return int(4 * step)
        unit *= 10


def _stacks(s: Summary) -> tuple[list[datetime], list[Counter[str]], list[str], str]:
    """Buckets (hours, or days over three days), each bucket's rejects by series (the six
    restrictions rejecting most, then `other`), the series, the label format."""
    hourly = s.hourly()
    buckets, step, fmt = _buckets(hourly)
    totals: Counter[str] = Counter()
    for (_, name), n in hourly.items():
        totals[name] += n
    shown = [name for name, _ in totals.most_common(len(COLORS) - 1)]
    index = {b: i for i, b in enumerate(buckets)}
    counts: list[Counter[str]] = [Counter() for _ in buckets]
    for (hour, name), n in hourly.items():
        bucket = hour if step.days == 0 else hour.replace(hour=0)
        counts[index[bucket]][name if name in shown else "other"] += n
    return buckets, counts, shown + (["other"] if any(c["other"] for c in counts) else []), fmt


def _legend(series: list[str], counts: list[Counter[str]], left: int, top: int,
            width: int) -> tuple[list[str], int]:
    """The legend under the chart in rows that fit the width; its SVG and bottom."""
    parts = []
    x, y = left, top
    for j, name in enumerate(series):
        item = 24 + 7 * (len(name) + 8)
        if x + item > width and x > left:
            x, y = left, y + 18
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" '
                     f'fill="{COLORS[j % len(COLORS)]}"/><text class="legend" x="{x + 16}" '
                     f'y="{y + 10}">{escape(name)} ({sum(c[name] for c in counts)})</text>')
        x += item
    return parts, y + 24


def timeline(s: Summary) -> str:
    """Rejects per hour (per day over three days), stacked by restriction."""
    buckets, counts, series, fmt = _stacks(s)
    if not buckets:
        return "<p>No rejects in this period.</p>"
    peak = _nice(max(sum(c.values()) for c in counts))
    bar, gap, left, top, height = max(8, min(40, 900 // len(buckets))), 4, 50, 20, 260
    width = max(left + len(buckets) * (bar + gap) + 20, 720)
    legend, bottom = _legend(series, counts, left, top + height + 34, width)
    parts = [f'<svg id="rejects-per-hour" width="{width}" height="{bottom}" '
             f'role="img" aria-label="Rejects per hour by restriction">']
    for k in range(5):  # grid lines and the scale
        value = peak * k / 4
        y = top + height - height * k / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#eee"/><text x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{value:.0f}</text>')
    for i, (when, c) in enumerate(zip(buckets, counts, strict=True)):
        x = left + i * (bar + gap)
        y = top + height
        for j, name in enumerate(series):
            n = c[name]
            if not n:
                continue
            h = height * n / peak
            y -= h
            parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                         f'fill="{COLORS[j % len(COLORS)]}"><title>{when.strftime(fmt)} '
                         f"{escape(name)}: {n}</title></rect>")
        total = sum(c.values())
        if total:
            parts.append(f'<text class="bar-total" x="{x + bar / 2}" y="{y - 4:.1f}" '
                         f'text-anchor="middle">{total}</text>')
        if i % max(1, len(buckets) // 8) == 0:
            parts.append(f'<text x="{x}" y="{top + height + 16}">{when.strftime(fmt)}</text>')
    return "".join([*parts, *legend, "</svg>"])


def hbars(ident: str, rows: list[tuple[str, int]], color: str = COLORS[0]) -> str:
    """A horizontal bar chart with the count at the end of each bar."""
    if not rows:
        return "<p>None.</p>"
    peak = max(n for _, n in rows) or 1
    label = max(len(k) for k, _ in rows) * 7 + 10
    width, row = label + 360, 22
    parts = [f'<svg id="{ident}" width="{width}" height="{len(rows) * row + 10}" role="img">']
    for i, (key, n) in enumerate(rows):
        y = 5 + i * row
        w = 300 * n / peak
        parts.append(f'<text x="{label - 6}" y="{y + 14}" text-anchor="end">{escape(key)}'
                     f'</text><rect x="{label}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{color}"><title>{escape(key)}: {n}</title></rect>'
                     f'<text class="bar-count" x="{label + w + 6:.1f}" y="{y + 14}">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[tuple[str, int]], head: str) -> str:
    if not rows:
        return "<p>None.</p>"
    return (f"<table><tr><th>{escape(head)}</th><th>count</th></tr>" + "".join(
        f'<tr><td>{escape(k)}</td><td class="n">{n}</td></tr>' for k, n in rows) + "</table>")


def _attacks(s: Summary, findings: list[Finding]) -> str:
    if not findings:
        return "<p>No dictionary attacks found.</p>"
    rows = "".join(
        f'<tr><td>{escape(f.cidr)}</td><td class="n">{f.rejects}</td><td class="n">'
        f'{f.addresses}</td><td class="n">{f.recipients_text()}</td><td>{s.when(f.first) or ""}</td>'
        f"<td>{s.when(f.last) or ''}</td></tr>" for f in findings)
    lines = "\n".join(escape(f.access_line()) for f in findings)
    return ("<table><tr><th>network / client</th><th>unknown-user rejects</th><th>addresses"
            "</th><th>recipients tried</th><th>first</th><th>last</th></tr>" + rows +
            "</table><p>Access map lines (a <code>cidr:</code> table in "
            "<code>check_client_access</code>):</p><pre id=\"access-lines\">" + lines +
            "</pre>")


def _blocks(s: Summary, top: int) -> str:
    b = s.blocks
    refused = s.by_restriction.get(RESTRICTION, 0)
    return (f"<p>{b.addresses + b.networks} blocks placed ({b.addresses} addresses, "
            f"{b.networks} networks), {refused} connections refused.</p>" +
            (_table(b.rows(top), "blocked address or network") if b.rows(top) else ""))


def render(s: Summary, findings: list[Finding], top: int = 10) -> str:
    period = f"{s.first or '-'} .. {s.last or '-'} ({s.lines} lines)"
    return "".join((
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>mailgate report {escape(period)}</title><style>{CSS}</style></head><body>",
        f'<h1>mailgate report</h1><div class="period">{escape(period)}</div>', _tiles(s),
        "<h2>Rejects per hour by restriction</h2>", timeline(s),
        '<div class="grid"><div><h2>Top rejected clients</h2>',
        hbars("top-clients", s.clients.top(top)),
        "</div><div><h2>Top rejected networks</h2>",
        hbars("top-networks", s.networks.top(top), COLORS[2]), "</div></div>",
        '<div class="grid"><div><h2>Rejects by restriction</h2>',
        hbars("by-restriction", s.by_restriction.most_common(top), COLORS[1]),
        "</div><div><h2>Rejects by code</h2>",
        hbars("by-code", sorted(s.by_code.items()), COLORS[4]), "</div></div>",
        "<h2>Dictionary attacks</h2>", _attacks(s, findings),
        "<h2>Automatic blocks</h2>", _blocks(s, top),
        '<div class="grid"><div><h2>Top senders</h2>', _table(s.senders.top(top), "sender"),
        "</div><div><h2>Top recipients</h2>", _table(s.recipients.top(top), "recipient"),
        "</div></div></body></html>\n"))
