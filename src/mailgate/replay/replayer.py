"""Replays batches of journal lines with one configuration: its engine (built as `mailgate
check` builds it), the DNS answers recorded (or asked now), and an exact cache of
evaluations keyed by a record's facts."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from mailgate.app import build_engine, build_resolver, interface_addresses
from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.dns.rbl import RblCache
from mailgate.journal.record import RecordError, Transaction, again, decode, facts_key
from mailgate.maps import MapOptions, default_registry
from mailgate.replay.guards import RecordedResolver, install
from mailgate.replay.simulate import Now, Simulation, then
from mailgate.replay.summary import Summary, rows

CACHE = 10_000  # evaluations kept in each of the cache's two generations


def _digest(facts: str) -> bytes:
    """The cache's key: a 128-bit BLAKE2 digest of the facts' text (two different facts
    share one with a probability of 2**-128: no cache answers for other facts)."""
    return hashlib.blake2b(facts.encode("utf-8", "surrogateescape"), digest_size=16).digest()


@dataclass(frozen=True)
class Options:
    """What every part of a replay does alike."""

    live_dns: bool = False
    json: bool = False
    since: float | None = None  # seconds since the epoch
    until: float | None = None


@dataclass
class Part:
    """One batch's result: its JSON lines (with --json), its counts, bad lines."""

    text: str
    summary: Summary
    bad: int = 0


class Replayer:
    """The configuration's engine, and what it answers to each transaction."""

    def __init__(self, cfg: Config, options: Options) -> None:
        install()
        self.options = options
        registry = default_registry(MapOptions.from_config(cfg))
        self.settings = smtpd = SmtpdSettings.from_config(cfg)
        local = interface_addresses(cfg, [a.host for a in smtpd.listen])
        resolver = build_resolver(cfg, registry, local)
        self.engine, _ = build_engine(cfg, registry, resolver, lambda text: None, local)
        self.recorded: RecordedResolver | None = None
        dns = self.engine.tables.dns
        if not options.live_dns and dns is not None:
            self.recorded = RecordedResolver()
            dns.resolver.close()
            dns.resolver = self.recorded
            if self.engine.tables.names is not None:
                self.engine.tables.names.resolver = self.recorded
        self.simulation = Simulation(self.engine, smtpd)
        # the cache: not for live answers (they change), nor for a list reply that shows
        # $client_port (the port is not among the facts)
        settings = self.engine.settings
        self.cacheable = self.recorded is not None and self.engine.tables.rbl_reply_maps is \
            None and "client_port" not in settings.default_rbl_reply + settings.dnsbl_reply
        # evaluations by the facts: the ones kept since the last turn, and the ones before
        self.cache: dict[bytes, tuple[Transaction, list[Now]]] = {}
        self.older: dict[bytes, tuple[Transaction, list[Now]]] = {}
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        dns = self.engine.tables.dns
        if dns is not None:
            dns.resolver.close()
        self.loop.close()

    async def evaluate(self, tx: Transaction) -> list[Now]:
        """The answers now for a transaction (its DNS answers and list entries recorded)."""
        dns = self.engine.tables.dns
        if self.recorded is not None and dns is not None:
            self.recorded.answers = tx.dns
            dns.rbl_cache = RblCache()
            for query, entry in tx.rbl.items():
                dns.rbl_cache.put(query, entry)
        return await self.simulation.run(tx)

    def lines(self, lines: list[str]) -> Part:
        """Replay journal lines."""
        return self.loop.run_until_complete(self._lines(lines))

    async def _lines(self, lines: list[str]) -> Part:
        part = Part("", Summary())
        out: list[str] = []
        cached = self.cacheable
        for line in lines:
            if not line.strip():
                continue
            try:
                key = _digest(facts_key(line)) if cached else b""
                known = self._known(key) if cached else None
                tx = again(line, known[0]) if known is not None else decode(line)
            except (RecordError, ValueError):
                part.bad += 1
                continue
            if not self._wanted(tx):
                continue
            if known is not None and not self._oversized(tx):
                now = known[1]
                part.summary.cached += 1
            else:
                now = await self.evaluate(tx if known is None else decode(line))
                if cached and not self._oversized(tx):
                    tx.dns, tx.rbl = {}, {}  # (not needed again: the answers are known)
                    self._keep(key, (tx, now))
            found = rows(tx, then(tx), now)
            part.summary.add(tx, found)
            if self.options.json:
                out += [row.json() for row in found]
        if out:
            out.append("")
            part.text = "\n".join(out)
        return part

    def _known(self, key: bytes) -> tuple[Transaction, list[Now]] | None:
        found = self.cache.get(key)
        if found is None:
            found = self.older.get(key)
            if found is not None:  # used again: kept another turn
                self._keep(key, found)
        return found

    def _keep(self, key: bytes, value: tuple[Transaction, list[Now]]) -> None:
        """Two generations, the older dropped when the newer is full: memory stays bounded
        and what is used keeps coming back (an LRU's effect, without its bookkeeping)."""
        if len(self.cache) >= CACHE:
            self.older, self.cache = self.cache, {}
        self.cache[key] = value

    def _oversized(self, tx: Transaction) -> bool:
        """MAIL SIZE= over message_size_limit: the one use of a size outside the facts."""
        limit = self.settings.message_size_limit
        return bool(limit) and tx.size > limit

    def _wanted(self, tx: Transaction) -> bool:
        o = self.options
        return (o.since is None or tx.time >= o.since) and (o.until is None or tx.time < o.until)
