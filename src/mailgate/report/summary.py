"""Reads log lines into totals, reject breakdowns, top lists and attack tracks (one pass, bounded
memory). Totals are counted as pflogsumm counts them, so that the two agree on a log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailgate.report.attacks import Attacks, network
from mailgate.report.blocks import BlockEvents
from mailgate.report.bounded import BoundedCounter
from mailgate.report.logline import Clock, hour, stamp
from mailgate.report.rejects import Known, fields, parse_reject, recipient

_SMTPD = frozenset({"smtpd", "postscreen", "policyd"})
_CLEANUP_PARTS = ("header", "body", "END-OF-MESSAGE")


@dataclass
class Summary:
    """Everything a report shows, fed lines (`consume`)."""

    clock: Clock = field(default_factory=Clock)
    since: datetime | None = None
    until: datetime | None = None
    lines: int = 0
    matched: int = 0
    first: datetime | None = None
    last: datetime | None = None
    received: int = 0
    delivered: int = 0
    forwarded: int = 0
    deferred: int = 0
    deferrals: int = 0
    bounced: int = 0
    expired: int = 0
    rejected: int = 0
    warned: int = 0
    held: int = 0
    discarded: int = 0
    connections: int = 0
    warnings: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    by_restriction: Counter[str] = field(default_factory=Counter)
    reasons: BoundedCounter[tuple[str, str]] = field(default_factory=BoundedCounter)
    warn_reasons: BoundedCounter[tuple[str, str]] = field(default_factory=BoundedCounter)
    clients: BoundedCounter[str] = field(default_factory=BoundedCounter)
    networks: BoundedCounter[str] = field(default_factory=BoundedCounter)
    senders: BoundedCounter[str] = field(default_factory=BoundedCounter)
    recipients: BoundedCounter[str] = field(default_factory=BoundedCounter)
    attacks: Attacks = field(default_factory=Attacks)
    blocks: BlockEvents = field(default_factory=BlockEvents)  # auto_block_* placed
    # rejects by (code, (stage, reason, restriction), hour text, stage or command)
    _tally: Counter[tuple[str, Known, str, str]] = field(default_factory=Counter)
    _received_ids: dict[str, None] = field(default_factory=dict)  # waiting for qmgr from=
    _sized_ids: dict[str, None] = field(default_factory=dict)
    _deferred_ids: dict[str, None] = field(default_factory=dict)
    # qmgr from= lines whose client= line this summary has not seen (for merge())
    _orphans: dict[str, str] = field(default_factory=dict)
    _first_line: str = ""
    _last_line: str = ""

    def consume(self, lines: Iterable[str]) -> None:
        """Count every line (the loop of a million-line log: string methods, no regex)."""
        count = matched = 0
        bounded = self.since is not None or self.until is not None
        first = last = ""
        try:
            for line in lines:
                count += 1
                i = line.find("]: ")
                if i < 0:
                    continue
                j = line.rfind(" ", 0, i)
                b = line.find("[", j, i)
                slash = line.rfind("/", j, b)
                if b < 0 or slash < 0:
                    continue
                if bounded and not self._in_period(line):
                    continue
                matched += 1
                if not first:
                    first = line
                last = line
                prog = line[slash + 1:b]
                text = line[i + 3:]
                if prog in _SMTPD:
                    if text.startswith("connect from "):
                        self.connections += 1
                    elif text.startswith("dis") or text.startswith("lost"):
                        pass
                    else:
                        self._smtpd(line, text)
                    continue
                colon = text.find(": ")
                if colon < 0:
                    continue
                rest = text[colon + 2:]
                if prog == "cleanup":
                    self._cleanup(rest)
                elif rest.startswith("to=<"):
                    self._delivery(text[:colon], rest)
                elif rest.startswith("from=<"):
                    self._queued(text[:colon], rest)
                elif rest.startswith("removed"):  # the message is gone: forget its id
                    qid = text[:colon]  # (deferred ids are kept: merge() counts them once)
                    self._sized_ids.pop(qid, None)
                    self._received_ids.pop(qid, None)
                elif colon == 7 and text.startswith("warning"):
                    self.warnings += 1
                elif prog == "pickup" and rest.startswith(("uid=", "sender=")):
                    self.received += 1
                    _remember(self._received_ids, text[:colon])
        finally:
            self.lines += count
            self.matched += matched
            if last:
                self._first_line = self._first_line or first
                self._last_line = last

    def merge(self, later: Summary) -> None:
        """Add the summary of the part of the log that follows this one (read by another
        process): counts add up, and the queue-id links that cross the boundary (a client=
        line here, its qmgr from= line there; a message deferred in both) are joined."""
        for name in ("lines", "matched", "received", "delivered", "forwarded", "deferred",
                     "deferrals", "bounced", "expired", "rejected", "warned", "held",
                     "discarded", "connections", "warnings"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        self.deferred -= sum(1 for q in later._deferred_ids if q in self._deferred_ids)
        for qid in later._deferred_ids:
            _remember(self._deferred_ids, qid)
        for qid, sender in later._orphans.items():
            if qid in self._received_ids:  # its client= line was in this part
                del self._received_ids[qid]
                self.senders.add(_fold(sender) if sender else "from=<>")
            elif qid not in self._sized_ids:
                _remember(self._orphans, qid, value=sender)
        for qid in later._sized_ids:
            _remember(self._sized_ids, qid)
        for qid in later._received_ids:
            _remember(self._received_ids, qid)
        self.senders.merge(later.senders)
        self.recipients.merge(later.recipients)
        self.clients.merge(later.clients)
        self.networks.merge(later.networks)
        self.warn_reasons.merge(later.warn_reasons)
        self._tally.update(later._tally)
        self.attacks.merge(later.attacks)
        self.blocks.merge(later.blocks)
        self._first_line = self._first_line or later._first_line
        self._last_line = later._last_line or self._last_line

    def _in_period(self, line: str) -> bool:
        when = self.clock.parse(stamp(line))
        return when is not None and not (self.since and when < self.since) and \
            not (self.until and when >= self.until)

    def done(self) -> None:
        """The last line was fed: the breakdowns and the period the log covers."""
        for (code, (_, reason, name), _, stage), n in self._tally.items():
            self.by_code[code] += n
            self.by_stage[stage] += n
            self.by_restriction[name] += n
            self.reasons.add((name, reason), n)
        if self._last_line:
            self.first = self.clock.parse(stamp(self._first_line))
            self.last = self.clock.parse(stamp(self._last_line))

    def when(self, stamp: str | None) -> datetime | None:
        return self.clock.parse(stamp) if stamp else None

    def hourly(self) -> Counter[tuple[datetime, str]]:
        """Rejects per (hour, restriction)."""
        out: Counter[tuple[datetime, str]] = Counter()
        for (_, (_, _, name), at, _), n in self._tally.items():
            when = self.clock.parse(at + ":00:00")
            if when is not None:
                out[(when, name)] += n
        return out

    def _smtpd(self, line: str, text: str) -> None:
        colon = text.find(": ")
        if colon < 0:
            return
        at = colon + 2
        if text.startswith("client=", at):
            self.received += 1
            _remember(self._received_ids, text[:colon])
        elif text.startswith("reject: ", at):
            self._reject(line, text[at + 8:])
        elif colon == 7 and text.startswith("warning"):
            self.warnings += 1
            self.blocks.consume(text)
        elif text.startswith("reject_warning: ", at):
            reject = parse_reject(text[at + 16:])
            self.warned += 1
            if reject is not None:
                self.warn_reasons.add((reject.restriction, reject.reason))
        elif text.startswith("hold: ", at):
            self.held += 1
        elif text.startswith("discard: ", at):
            self.discarded += 1

    def _reject(self, line: str, text: str) -> None:
        """One reject: a single tally increment (breakdowns are derived in done()), the
        client and its network, and unknown users for the attack tracks."""
        self.rejected += 1
        found = fields(text)
        if found is None:
            return
        command, client, addr, code, known, rest, cut = found
        self._tally[(code, known, hour(line), known[0] or command)] += 1
        counts = self.clients.counts
        if client in counts:
            counts[client] += 1
        else:
            self.clients.add(client)
        if addr.count(".") == 3:
            self.networks.add(addr[:addr.rfind(".")] + ".0/24")
        else:
            net = network(addr)
            if net is not None:
                self.networks.add(net)
        if known[2] == "reject_unlisted_recipient":
            rcpt = recipient(rest, cut)
            if rcpt is not None:
                self.attacks.unknown_user(addr, rcpt, stamp(line))

    def _cleanup(self, rest: str) -> None:
        action, _, what = rest.partition(": ")
        if what.split(" ", 1)[0] not in _CLEANUP_PARTS:
            return
        if action in ("reject", "milter-reject"):
            self.rejected += 1
            self.by_stage["cleanup"] += 1
            self.by_restriction["header_checks/body_checks"] += 1
        elif action == "warning":
            self.warned += 1
        elif action == "hold":
            self.held += 1
        elif action == "discard":
            self.discarded += 1

    def _queued(self, qid: str, rest: str) -> None:
        """qmgr's `from=<s>, size=N, nrcpt=K`: the sender of a received message."""
        if ", status=expired" in rest:
            self.expired += 1
            return
        if ", size=" not in rest or qid in self._sized_ids:
            return
        _remember(self._sized_ids, qid)
        sender = rest[6:rest.find(">, size=")]
        if qid in self._received_ids:
            del self._received_ids[qid]
            self.senders.add(_fold(sender) if sender else "from=<>")
        else:
            _remember(self._orphans, qid, value=sender)

    def _delivery(self, qid: str, rest: str) -> None:
        """`to=<a>, [orig_to=<o>, ]relay=R, ..., delay=D, ..., status=S (why)` (the fields
        pflogsumm requires, in its order)."""
        st = rest.find(", status=")
        relay = rest.find(", relay=")
        if st < 0 or relay < 0 or not relay < rest.find(", delay=", relay) < st:
            return
        end = rest.find(" ", st + 9)
        status = rest[st + 9:end] if end >= 0 else rest[st + 9:].rstrip("\n")
        if status == "sent":
            if "forwarded as " in rest[st:]:
                self.forwarded += 1
                return
            self.delivered += 1
            addr = rest[4:rest.find(">")]
            counts = self.recipients.counts
            if addr in counts:  # pflogsumm folds the domain's case; most are lower case
                counts[addr] += 1
            else:
                self.recipients.add(_fold(addr))
        elif status == "deferred":
            self.deferrals += 1
            if qid not in self._deferred_ids:
                _remember(self._deferred_ids, qid)
                self.deferred += 1
        elif status == "bounced":
            self.bounced += 1


def _fold(addr: str) -> str:
    """The domain in lower case (pflogsumm's default)."""
    at = addr.rfind("@")
    return addr[:at] + addr[at:].lower() if at >= 0 else addr


def _remember(ids: dict[str, Any], qid: str, cap: int = 200_000, value: Any = None) -> None:
    """A bounded set (or map) of queue ids (the oldest forgotten first)."""
    if len(ids) >= cap:
        del ids[next(iter(ids))]
    ids[qid] = value
