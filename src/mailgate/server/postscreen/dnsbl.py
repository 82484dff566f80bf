"""postscreen's DNS list test: one query per list domain, weighted scoring with reply
filters, the score's TTL, and dnsblog's log lines (postscreen_dnsbl.c, dnsblog.c).

Beyond Postfix: an answer in 127.255.255.0/24 (Spamhaus' "query refused" codes, sent to
public and open resolvers) is never a listing; it is logged as a list error instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailgate.dns.rbl import Site, reverse_query
from mailgate.dns.resolver import NOTFOUND, OK, Resolver
from mailgate.errors import MapError
from mailgate.maps import Map

REFUSED = ipaddress.ip_network("127.255.255.0/24")
Log = Callable[[str, str], None]  # (program, text)


def refused(addr: str) -> bool:
    """An answer that reports an error, not a listing (127.255.255.0/24)."""
    try:
        return ipaddress.ip_address(addr) in REFUSED
    except ValueError:
        return False


@dataclass
class Score:
    """A client's combined score as the lists answer (PSC_DNSBL_SCORE): the total, the name
    of the largest contributor, and the shortest TTLs of the answers that count for and
    against the client."""

    max_ttl: int
    total: int = 0
    name: str | None = None
    weight: int = 0
    fail_ttl: int = 0
    pass_ttl: int = 0
    answered: int = 0

    def __post_init__(self) -> None:
        self.fail_ttl = self.pass_ttl = self.max_ttl

    def add(self, sites: Sequence[Site], name: str, addrs: Sequence[str], ttl: int) -> None:
        """One list's answer (psc_dnsbl_receive): each entry of the list whose filter
        matches an address adds its weight; the TTL counts against the client for a positive
        weight, for it otherwise (and for a name that is not listed)."""
        self.answered += 1
        matched = False
        for site in sites:
            if addrs and (site.pattern is None or any(site.pattern.match(a) for a in addrs)):
                matched = True
                if self.name is None or self.weight < site.weight:
                    self.name, self.weight = name, site.weight
                self.total += site.weight
                if site.weight > 0:
                    self.fail_ttl = min(self.fail_ttl, ttl) if ttl >= 0 else self.fail_ttl
                elif ttl >= 0:
                    self.pass_ttl = min(self.pass_ttl, ttl)
        if not matched and ttl >= 0:
            self.pass_ttl = min(self.pass_ttl, ttl)

    def ttl(self, min_ttl: int) -> int:
        """psc_dnsbl_retrieve()'s TTL: the failing answers' for a positive score, else the
        passing ones', never below postscreen_dnsbl_min_ttl."""
        return max(self.fail_ttl if self.total > 0 else self.pass_ttl, min_ttl)


@dataclass
class DnsLists:
    """postscreen_dnsbl_sites grouped by list domain (in Postfix's order: the last entry of
    a domain first), with the names replies show (postscreen_dnsbl_reply_map)."""

    sites: dict[str, list[Site]]
    names: dict[str, str]
    resolver: Resolver
    timeout: float
    max_ttl: int
    log: Log
    running: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def build(cls, sites: tuple[Site, ...], reply_map: Map | None, resolver: Resolver,
              timeout: float, max_ttl: int, log: Log) -> DnsLists:
        by_domain: dict[str, list[Site]] = {}
        names: dict[str, str] = {}
        for site in sites:
            by_domain.setdefault(site.domain, []).insert(0, site)
            if site.domain not in names:
                names[site.domain] = _safe_name(site.domain, reply_map, log)
        return cls(by_domain, names, resolver, timeout, max_ttl, log)

    def query(self, addr: str) -> DnsQuery:
        """Ask every list about `addr` now; the answers add up in the returned query's score
        (the lookups go on, and log, when the client is gone)."""
        query = DnsQuery(Score(self.max_ttl), asyncio.Event(), len(self.sites))
        key = reverse_query(addr)
        if key is None:
            query.done.set()
            return query
        loop = asyncio.get_running_loop()
        for domain in self.sites:
            task = loop.create_task(self._ask(query, addr, key, domain))
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        return query

    async def _ask(self, query: DnsQuery, addr: str, key: str, domain: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.resolver.query(f"{key}.{domain}", "A")
        except TimeoutError:
            self.log("postscreen", f"warning: dnsblog reply timeout {int(self.timeout)}s "
                     f"for {domain}")
            query.answered()
            return
        addrs: list[str] = []
        ttl = -1
        if answer.status == OK:
            found = [r for r in answer.records if r.type == "A"]
            addrs = [r.data for r in found if not refused(r.data)]
            errors = [r.data for r in found if refused(r.data)]
            ttl = min((r.ttl for r in found), default=-1)
            if addrs:  # dnsblog.c
                self.log("dnsblog", f"addr {addr} listed by domain {domain} as "
                         f"{' '.join(addrs)}")
            for error in errors:
                self.log("dnsblog", f"warning: {domain}: list error: {key}.{domain} answered "
                         f"{error}: error code (query refused or resolver blocked); not a "
                         "listing")
        elif answer.status == NOTFOUND:
            ttl = answer.ttl
        query.score.add(self.sites[domain], self.names[domain], addrs, ttl)
        query.answered()


def _safe_name(domain: str, reply_map: Map | None, log: Log) -> str:
    if reply_map is None:
        return domain
    try:
        return reply_map.lookup(domain) or domain
    except MapError:
        log("postscreen", f"warning: {reply_map.spec} lookup error for {domain}")
        return domain


@dataclass
class DnsQuery:
    """The lookups for one client: its score so far; `done` once every list answered."""

    score: Score
    done: asyncio.Event
    pending: int

    def answered(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.done.set()
