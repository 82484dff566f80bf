"""Dictionary attacks in a log: clients and networks with many `User unknown` rejects across
addresses (the "moving spammer" walks its network), and the cidr lines that block them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mailgate.report.bounded import prune

_KEEP = 64  # distinct recipients remembered per client or network (enough to judge)
_CAP = 20_000  # clients and networks remembered (the least active half is dropped past it)


def network(addr: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) around a client address, in cidr form; None if no IP."""
    if "." in addr and ":" not in addr:
        head, dot, _ = addr.rpartition(".")
        return f"{head}.0/24" if dot and head.count(".") == 2 else None
    try:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    except ValueError:
        return None


@dataclass(slots=True)
class Track:
    """Unknown-user rejects of one client or network."""

    rejects: int = 0
    recipients: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    first: str = ""  # timestamp texts as in the log
    last: str = ""

    def add(self, addr: str, recipient: str, when: str) -> None:
        self.rejects += 1
        if len(self.recipients) < _KEEP:
            self.recipients.add(recipient.lower())
        if len(self.addresses) < 256:
            self.addresses.add(addr)
        self.first = self.first or when
        self.last = when


@dataclass(frozen=True)
class Finding:
    """A client (/32, /128) or network to block, with what it did."""

    cidr: str
    rejects: int
    addresses: int
    recipients: int
    first: str  # timestamp texts as in the log
    last: str

    def recipients_text(self) -> str:
        """The distinct recipients tried (`64+`: more than are remembered)."""
        return f"{self.recipients}+" if self.recipients >= _KEEP else str(self.recipients)

    def access_line(self) -> str:
        """A cidr: table line (check_client_access cidr:/etc/postfix/client_access.cidr)."""
        who = (f"{self.addresses} addresses" if self.addresses > 1 else "this address")
        return (f"{self.cidr:<20} REJECT dictionary attack from {who} "
                f"({self.rejects} unknown users)")


class Attacks:
    """Counts `User unknown` rejects per client and per network, in bounded memory."""

    def __init__(self) -> None:
        self.clients: dict[str, Track] = {}
        self.networks: dict[str, Track] = {}

    def unknown_user(self, addr: str, recipient: str, when: str) -> None:
        net = network(addr)
        if net is None:
            return
        for table, key in ((self.clients, addr), (self.networks, net)):
            track = table.get(key)
            if track is None:
                if len(table) >= _CAP:
                    prune(table, _CAP // 2, _rejects)
                track = table[key] = Track()
            track.add(addr, recipient, when)

    def merge(self, later: Attacks) -> None:
        """Add the tracks of a later part of the same log."""
        for table, other in ((self.clients, later.clients), (self.networks, later.networks)):
            for key, theirs in other.items():
                ours = table.get(key)
                if ours is None:
                    if len(table) >= _CAP:
                        prune(table, _CAP // 2, _rejects)
                    table[key] = theirs
                    continue
                ours.rejects += theirs.rejects
                _union(ours.recipients, theirs.recipients, _KEEP)
                _union(ours.addresses, theirs.addresses, 256)
                ours.first = ours.first or theirs.first
                ours.last = theirs.last or ours.last

    def findings(self, threshold: int, spread: int) -> list[Finding]:
        """Networks with `threshold` rejects from two or more addresses (the moving spammer),
        then single clients with `threshold` rejects outside those networks; each with at
        least `spread` distinct recipients (one mistyped address is no attack)."""
        out = []
        flagged = set()
        for net, t in sorted(self.networks.items(), key=lambda kv: -kv[1].rejects):
            if t.rejects >= threshold and len(t.addresses) > 1 and len(t.recipients) >= spread:
                out.append(Finding(net, t.rejects, len(t.addresses), len(t.recipients),
                                   t.first, t.last))
                flagged.add(net)
        for addr, t in sorted(self.clients.items(), key=lambda kv: -kv[1].rejects):
            if (t.rejects >= threshold and len(t.recipients) >= spread
                    and network(addr) not in flagged):
                bits = 32 if ":" not in addr else 128
                out.append(Finding(f"{addr}/{bits}", t.rejects, 1, len(t.recipients),
                                   t.first, t.last))
        return out


def _rejects(track: Track) -> int:
    return track.rejects


def _union(ours: set[str], theirs: set[str], cap: int) -> None:
    """Add theirs to ours while ours has fewer than `cap` members."""
    for item in theirs:
        if len(ours) >= cap:
            return
        ours.add(item)
