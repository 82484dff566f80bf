"""The kill storm's count: the senders' ledger against the Maildir files and the relay sink.

A delivery item is (sender, recipient). Maildir files name theirs in the `Return-Path:` and
`Delivered-To:` lines the Maildir agent prepends; the sink records MAIL FROM and RCPT TO.
Every acknowledged item must be in the Maildir exactly once or at the sink at least once;
a relay duplicate is attributed to the first kill of a master or worker after its first copy
arrived (or to the restart at the end, for a worker's orphaned queue file).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.killload import Ledger, Outcome
from support.sink import read_records

Item = tuple[str, str]


@dataclass
class Report:
    """What a storm did and what arrived where."""

    messages: dict[str, int] = field(default_factory=dict)  # outcome → messages
    acked: dict[str, int] = field(default_factory=dict)  # "maildir"/"relay" → items
    delivered: dict[str, int] = field(default_factory=dict)  # acknowledged items found
    lost: list[str] = field(default_factory=list)
    maildir_duplicates: list[str] = field(default_factory=list)
    relay_duplicates: int = 0  # extra copies at the sink
    relay_duplicate_causes: dict[str, int] = field(default_factory=dict)
    unacked: dict[str, int] = field(default_factory=dict)  # items, and those delivered
    stray: list[str] = field(default_factory=list)  # delivered, but never sent
    maildir_tmp_left: int = 0
    stuck: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)


def _header(path: Path) -> Item | None:
    try:
        with open(path, "rb") as f:
            head = f.read(1024).decode("utf-8", "replace")
    except OSError:
        return None
    sender = rcpt = None
    for line in head.splitlines():
        if line.startswith("Return-Path: <"):
            sender = line[len("Return-Path: <"):].rstrip(">")
        elif line.startswith("Delivered-To: "):
            rcpt = line[len("Delivered-To: "):]
            break
    return (sender.lower(), rcpt.lower()) if sender is not None and rcpt else None


def maildir_items(domain_dir: Path) -> tuple[Counter[Item], int]:
    """Items found in new/ and cur/ of every Maildir under `domain_dir`; files in tmp/."""
    found: Counter[Item] = Counter()
    tmp = 0
    for maildir in sorted(p for p in domain_dir.glob("*") if p.is_dir()):
        for sub in ("new", "cur"):
            for entry in sorted((maildir / sub).glob("*")):
                item = _header(entry)
                found[item if item else ("?", str(entry))] += 1
        tmp += sum(1 for _ in (maildir / "tmp").glob("*"))
    return found, tmp


def sink_items(record: Path, domain: str) -> dict[Item, list[float]]:
    """Items the sink recorded for `domain`, with the times their copies arrived."""
    found: dict[Item, list[float]] = {}
    for entry in read_records(str(record)):
        sender = str(entry.get("from", "")).lower()
        for rcpt in map(str.lower, entry.get("rcpt", [])):
            if rcpt.endswith("@" + domain):
                found.setdefault((sender, rcpt), []).append(float(entry.get("time", 0)))
    return found


def _cause(first: float, kills: list[tuple[float, str]]) -> str:
    """The first kill of a delivering process (not the metrics exporter) after `first`."""
    for when, kind in kills:
        if when >= first and kind != "metrics":
            return f"{kind} kill"
    return "drain restart"


def count(ledger: Ledger, maildir_domain: Path, sink_record: Path,
          kills: list[tuple[float, str]]) -> Report:
    maildir_name = maildir_domain.name
    relay_found = sink_items(sink_record, "relay.test")
    maildir_found, tmp = maildir_items(maildir_domain)
    report = Report(maildir_tmp_left=tmp)
    report.messages = {o.value: n for o, n in ledger.messages.items()}
    report.acked = {"maildir": 0, "relay": 0}
    report.delivered = {"maildir": 0, "relay": 0}
    report.unacked = {"items": 0, "maildir": 0, "relay": 0}
    causes: Counter[str] = Counter()
    for item, outcome in sorted(ledger.items.items()):
        where = "maildir" if item[1].endswith("@" + maildir_name) else "relay"
        copies = maildir_found.get(item, 0) if where == "maildir" else \
            len(relay_found.get(item, []))
        if outcome is not Outcome.ACKED:
            report.unacked["items"] += 1
            report.unacked[where] += 1 if copies else 0
            continue
        report.acked[where] += 1
        if not copies:
            report.lost.append(" ".join(item))
            continue
        report.delivered[where] += 1
        if copies > 1 and where == "maildir":
            report.maildir_duplicates.append(" ".join(item))
        elif copies > 1:
            report.relay_duplicates += copies - 1
            causes[_cause(min(relay_found[item]), kills)] += copies - 1
    report.relay_duplicate_causes = dict(causes)
    known = set(ledger.items)
    report.stray = [" ".join(i) for i in (*maildir_found, *relay_found) if i not in known]
    return report


def print_report(r: Report, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(r.__dict__, indent=2, sort_keys=True))
        return
    s, m = r.storm, r.messages
    kills = ", ".join(f"{k} {n}" for k, n in sorted(r.kills.items()))
    print(f"killstorm: {sum(r.kills.values())} kills in {s['seconds']:.1f} s "
          f"(seed {r.settings['seed']}, {r.settings['workers']} smtpd workers): {kills}")
    print(f"  master started {s['master_starts']}x (restart max {s['master_restart_max']:.2f} s),"
          f" gave up {s['master_gave_up']}x (workers kept dying); worker restarted by the "
          f"master within {s['worker_restart_max']:.3f} s")
    print(f"messages sent {sum(m.values())}: acknowledged {m['acked']}, refused {m['refused']},"
          f" dropped without a reply {m['dropped']} ({s['smtp_source_runs']} smtp-source runs"
          " + Python client)")
    print(f"acknowledged items: Maildir {r.acked['maildir']}, relay {r.acked['relay']}")
    print(f"delivered: Maildir {r.delivered['maildir']}, relay {r.delivered['relay']}")
    print(f"lost: {len(r.lost)}" + (f"  {r.lost[:10]}" if r.lost else ""))
    print(f"Maildir duplicates: {len(r.maildir_duplicates)}"
          + (f"  {r.maildir_duplicates[:10]}" if r.maildir_duplicates else ""))
    causes = ", ".join(f"{k} {n}" for k, n in sorted(r.relay_duplicate_causes.items()))
    print(f"relay duplicates: {r.relay_duplicates}" + (f" (first copy before: {causes})"
          if causes else "") + " -- the relay is at-least-once (decision 0022)")
    print(f"never acknowledged items: {r.unacked['items']}, of which delivered anyway: "
          f"Maildir {r.unacked['maildir']}, relay {r.unacked['relay']}")
    print(f"queue drained in {s['drain_seconds']:.1f} s; left in the queue by killed workers "
          f"until a restart: {len(r.stuck)}; still queued after it: {len(r.left)}")
    if r.stray or r.maildir_tmp_left:
        print(f"delivered but never sent: {len(r.stray)}; files left in Maildir tmp/: "
              f"{r.maildir_tmp_left}")
    print(f"work directory: {r.settings['workdir']}")
    print("RESULT: " + ("FAIL" if r.lost or r.maildir_duplicates else "OK"))
