"""What changes, counted: each recipient's reply then and now, summed into the counts and the
top lists the reports show, and written as one JSON line for `--json`. Memory does not grow
with the input: the lists keep their first rows and the counters their heaviest keys.

What a transaction adds (an Effect) is worked out once for its facts and `then` and added
again for each record with the same: Rows are made only for the lists' first rows and for
`--json`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
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
        return change(self.then, self.now)

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


def change(then: Outcome, now: Now) -> str:
    """refused (now, not then), accepted (then refused, now not), same, unknown."""
    outcome = now.outcome
    if outcome is None:
        return "unknown"
    if outcome.refused and not then.refused:
        return "refused"
    if then.refused and not outcome.refused:
        return "accepted"
    return "same"


KEPT = ("refused", "accepted", "unknown")  # the changes whose first rows the reports show


@dataclass(frozen=True, slots=True)
class Effect:
    """What one transaction adds to a Summary, but its time: per recipient the reply then
    and now, and the keys counted (in the recipients' order)."""

    then: tuple[Outcome, ...]
    now: tuple[Now, ...]
    changes: tuple[tuple[str, int], ...]
    rules_then: tuple[tuple[str, int], ...]  # refusals by restriction
    rules_now: tuple[tuple[str, int], ...]
    refused: tuple[tuple[str, str, str], ...]  # newly refused: (rule, client, sender domain)
    reasons: tuple[str, ...]  # not evaluated: why
    kept: frozenset[str]  # its changes of KEPT

    def rows(self, tx: Transaction, time: float) -> list[Row]:
        """Its recipients' rows, for a record of `tx` at `time`."""
        recipients: list[str | None] = list(tx.recipients) or [None]
        helo = tx.helo if "helo" not in tx.missing else None
        return [Row(time, tx.client, helo, tx.sender, r, t, n)
                for r, t, n in zip(recipients, self.then, self.now, strict=True)]


def effect(tx: Transaction, then: list[Outcome], now: Sequence[Now]) -> Effect:
    """What `tx` adds, with these replies then and now (one each per recipient)."""
    changes: dict[str, int] = {}
    rules_then: dict[str, int] = {}
    rules_now: dict[str, int] = {}
    refused, reasons = [], []
    for t, n in zip(then, now, strict=True):
        what = change(t, n)
        changes[what] = changes.get(what, 0) + 1
        if t.refused:
            key = _restriction(t)
            rules_then[key] = rules_then.get(key, 0) + 1
        outcome = n.outcome
        if outcome is not None and outcome.refused:
            key = _restriction(outcome)
            rules_now[key] = rules_now.get(key, 0) + 1
        if what == "refused":
            assert outcome is not None
            refused.append((rule_text(outcome.rule), tx.client.namaddr, domain(tx.sender)))
        elif what == "unknown":
            reasons.append(reason_kind(n.reason))
    return Effect(tuple(then), tuple(now), tuple(changes.items()), tuple(rules_then.items()),
                  tuple(rules_now.items()), tuple(refused), tuple(reasons),
                  frozenset(changes).intersection(KEPT))


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

    def add(self, time: float, done: Effect, rows: Callable[[], list[Row]]) -> None:
        """Count a transaction at `time`; `rows()` makes its rows if the lists want them."""
        self.transactions += 1
        if self.first is None or time < self.first:
            self.first = time
        if self.last is None or time > self.last:
            self.last = time
        self.recipients += len(done.now)
        for key, n in done.changes:
            self.changes[key] += n
        for key, n in done.rules_then:
            self.rules_then[key] += n
        for key, n in done.rules_now:
            self.rules_now[key] += n
        for entry, client, sender_domain in done.refused:
            self.entries.add(entry)
            self.clients.add(client)
            self.sender_domains.add(sender_domain)
        for reason in done.reasons:
            self.reasons.add(reason)
        if done.kept and any(len(self._kept(what)) < EXAMPLES for what in done.kept):
            for row in rows():
                what = row.change
                if what in done.kept:
                    _keep(self._kept(what), row)

    def _kept(self, what: str) -> list[Row]:
        return self.refused if what == "refused" else self.accepted if what == "accepted" \
            else self.unknown

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
