"""What changes, counted: each recipient's reply then and now, summed into the counts and the
top lists the reports show, and written as one JSON line for `--json`. Memory does not grow
with the input: the lists keep their first rows and the counters their heaviest keys."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from mailgate.engine.context import Client
from mailgate.journal.record import Outcome, Transaction
from mailgate.replay.guards import reason_kind
from mailgate.replay.simulate import Now, rule_text
from mailgate.report.bounded import BoundedCounter

EXAMPLES = 50  # rows kept of each change


@dataclass(frozen=True, slots=True)
class Row:
    """One recipient: who sent it, what it got then and what it gets now."""

    time: float
    client: Client
    helo: str | None
    sender: str
    recipient: str | None
    then: Outcome
    now: Now

    @property
    def change(self) -> str:
        """refused (now, not then), accepted (then refused, now not), same, unknown."""
        now = self.now.outcome
        if now is None:
            return "unknown"
        if now.refused and not self.then.refused:
            return "refused"
        if self.then.refused and not now.refused:
            return "accepted"
        return "same"

    def when(self) -> str:
        return datetime.fromtimestamp(self.time).isoformat(timespec="seconds")

    def json(self) -> str:
        now, then = self.now.outcome, self.then
        rule = now.rule if now is not None else None
        return json.dumps({
            "time": self.when(), "client_address": self.client.addr,
            "client_port": self.client.port or None,
            "client_name": self.client.name, "helo": self.helo, "sender": self.sender,
            "recipient": self.recipient, "then": then.code,
            "now": now.code if now is not None else None,
            "rule": rule.restriction if rule is not None else None,
            "table": rule.table if rule is not None and rule.table else None,
            "entry": rule.entry if rule is not None and rule.entry else None,
            "stage": self.now.stage or None,
            "reply": f"{now.code} {now.dsn} {now.text}" if now is not None and now.refused
            else None,
            "then_rule": then.rule.restriction if then.rule is not None else None,
            "evaluated": now is not None,
            "reason": self.now.reason or None}, ensure_ascii=False)


def rows(tx: Transaction, then: list[Outcome], now: list[Now]) -> list[Row]:
    recipients: list[str | None] = list(tx.recipients) or [None]
    return [Row(tx.time, tx.client, tx.helo if "helo" not in tx.missing else None, tx.sender,
                r, t, n) for r, t, n in zip(recipients, then, now, strict=True)]


def domain(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else "(none)"


@dataclass
class Summary:
    """The counts of one replay (or of one part of it, merged in order)."""

    transactions: int = 0
    recipients: int = 0
    changes: Counter[str] = field(default_factory=Counter)  # refused, accepted, same, unknown
    rules_then: Counter[str] = field(default_factory=Counter)  # refusals by restriction
    rules_now: Counter[str] = field(default_factory=Counter)
    entries: BoundedCounter[str] = field(default_factory=BoundedCounter)  # newly refused
    clients: BoundedCounter[str] = field(default_factory=BoundedCounter)
    sender_domains: BoundedCounter[str] = field(default_factory=BoundedCounter)
    reasons: BoundedCounter[str] = field(default_factory=BoundedCounter)
    refused: list[Row] = field(default_factory=list)  # the first newly refused
    accepted: list[Row] = field(default_factory=list)
    unknown: list[Row] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    cached: int = 0  # transactions whose facts were replayed before (evaluated once)

    def add(self, tx: Transaction, found: list[Row]) -> None:
        self.transactions += 1
        self.first = tx.time if self.first is None else min(self.first, tx.time)
        self.last = tx.time if self.last is None else max(self.last, tx.time)
        for row in found:
            self.recipients += 1
            change = row.change
            self.changes[change] += 1
            if row.then.refused:
                self.rules_then[_restriction(row.then)] += 1
            now = row.now.outcome
            if now is not None and now.refused:
                self.rules_now[_restriction(now)] += 1
            if change == "refused":
                assert now is not None
                self.entries.add(rule_text(now.rule))
                self.clients.add(row.client.namaddr)
                self.sender_domains.add(domain(row.sender))
                _keep(self.refused, row)
            elif change == "accepted":
                _keep(self.accepted, row)
            elif change == "unknown":
                self.reasons.add(reason_kind(row.now.reason))
                _keep(self.unknown, row)

    def merge(self, other: Summary) -> None:
        """Add a later part's counts."""
        self.transactions += other.transactions
        self.recipients += other.recipients
        self.cached += other.cached
        self.changes.update(other.changes)
        self.rules_then.update(other.rules_then)
        self.rules_now.update(other.rules_now)
        for mine, theirs in ((self.entries, other.entries), (self.clients, other.clients),
                             (self.sender_domains, other.sender_domains),
                             (self.reasons, other.reasons)):
            mine.merge(theirs)
        for kept, more in ((self.refused, other.refused), (self.accepted, other.accepted),
                           (self.unknown, other.unknown)):
            kept.extend(more[:EXAMPLES - len(kept)])
        for value in (other.first, other.last):
            if value is not None:
                self.first = value if self.first is None else min(self.first, value)
                self.last = value if self.last is None else max(self.last, value)


def _restriction(outcome: Outcome) -> str:
    return outcome.rule.restriction if outcome.rule is not None else "(smtpd)"


def _keep(rows: list[Row], row: Row) -> None:
    if len(rows) < EXAMPLES:
        rows.append(row)
