"""The plain-text report: pflogsumm's grand totals first, then what it lacks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from mailgate.report.attacks import Finding
from mailgate.report.blocks import RESTRICTION
from mailgate.report.summary import Summary


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part // whole}%" if whole else "0%"


def _table(title: str, rows: Iterable[tuple[object, int]], empty: str = "none") -> list[str]:
    out = ["", title, "-" * len(title)]
    rows = list(rows)
    out += [f"  {count:>8}  {key}" for key, count in rows] or [f"  {empty}"]
    return out


def _blocks(s: Summary, top: int) -> list[str]:
    """Automatic blocks placed (auto_block_*) and the connections they refused."""
    b = s.blocks
    refused = s.by_restriction.get(RESTRICTION, 0)
    title = "Automatic blocks (auto_block_*)"
    return ["", title, "-" * len(title),
            f"  {b.addresses + b.networks} blocks placed ({b.addresses} addresses, "
            f"{b.networks} networks), {refused} connections refused",
            *(f"  {count:>8}  {key}" for key, count in b.rows(top))]


def render(s: Summary, findings: list[Finding], top: int = 10) -> str:
    handled = s.delivered + s.rejected + s.discarded
    lines = [f"mailgate report: {_when(s.first)} .. {_when(s.last)} "
             f"({s.lines} lines, {s.matched} in the period)", "",
             "Grand Totals", "------------", "messages", "",
             f"  {s.received:>8}  received",
             f"  {s.delivered:>8}  delivered",
             f"  {s.forwarded:>8}  forwarded",
             f"  {s.deferred:>8}  deferred" + (f"  ({s.deferrals} deferrals)" if s.deferrals
                                                 else ""),
             f"  {s.bounced:>8}  bounced",
             f"  {s.rejected:>8}  rejected ({_pct(s.rejected, handled)})",
             f"  {s.warned:>8}  reject warnings",
             f"  {s.held:>8}  held",
             f"  {s.discarded:>8}  discarded ({_pct(s.discarded, handled)})",
             f"  {s.expired:>8}  expired",
             "",
             f"  {s.connections:>8}  SMTP connections",
             f"  {s.warnings:>8}  warnings"]
    lines += _table("Rejects by code", sorted(s.by_code.items()))
    lines += _table("Rejects by stage", s.by_stage.most_common())
    lines += _table("Rejects by restriction", s.by_restriction.most_common())
    lines += _table("Top reject reasons",
                    ((f"{r}: {why}", n) for (r, why), n in s.reasons.top(top)))
    lines += _table("Reject warnings (warn_if_reject)",
                    ((f"{r}: {why}", n) for (r, why), n in s.warn_reasons.top(top)))
    lines += _table("Top rejected clients", s.clients.top(top))
    lines += _table("Top rejected networks (/24, /64)", s.networks.top(top))
    lines += _table("Top senders (received mail)", s.senders.top(top))
    lines += _table("Top recipients (delivered mail)", s.recipients.top(top))
    lines += ["", "Dictionary attacks (many unknown users; the moving spammer)",
              "-----------------------------------------------------------"]
    if not findings:
        lines.append("  none")
    for f in findings:
        lines.append(f"  {f.cidr}: {f.rejects} unknown-user rejects, {f.recipients_text()} "
                     f"distinct recipients, from {f.addresses} address"
                     f"{'es' if f.addresses > 1 else ''}, {_when(s.when(f.first))} .. "
                     f"{_when(s.when(f.last))}")
    if findings:
        lines += ["", "  Access map lines to block them (a cidr: table in "
                      "smtpd_client_restrictions, e.g.", "  check_client_access "
                      "cidr:/etc/postfix/client_access.cidr):", ""]
        lines += [f"  {f.access_line()}" for f in findings]
    lines += _blocks(s, top)
    pruned = [name for name, c in (("clients", s.clients), ("networks", s.networks),
                                   ("senders", s.senders), ("recipients", s.recipients))
              if c.pruned]
    if pruned:
        lines += ["", f"note: too many distinct {', '.join(pruned)} to keep them all: their "
                      "top lists are approximate (lower bounds)"]
    return "\n".join(lines) + "\n"
