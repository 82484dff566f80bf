"""Replays batches of journal lines with one configuration: its engine (built as `mailgate
check` builds it), the DNS answers recorded (or asked now), and an exact cache of
evaluations keyed by a record's facts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailgate.app import build_engine, build_resolver, interface_addresses
from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.dns.rbl import RblCache
from mailgate.engine.engine import Engine
from mailgate.journal.parts import Answers, decode_facts, decode_then, read_head
from mailgate.journal.record import FACTS, RecordError, Then, Transaction
from mailgate.maps import MapOptions, default_registry
from mailgate.replay.cache import Evaluations, Generations, Known, Line
from mailgate.replay.guards import RecordedResolver, install
from mailgate.replay.simulate import Now, Simulation, replies_then, then_key
from mailgate.replay.summary import Effect, Row, Summary, effect

PROBATION = 8_000  # evaluations of facts seen once, in each of two generations
KEPT = 4_000  # evaluations of facts seen again, in each of two generations
THENS = 4_096  # `then` texts decoded, in each generation
# What makes a DNS list reply differ between records of the same facts: no cache then.
UNCACHED_MACROS = ("client_port", "localtime")


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


def cacheable(cfg: Config, engine: Engine) -> bool:
    """Whether an evaluation is a function of the record's facts (and simulate.then_key)
    with this configuration's engine, the DNS answers being the recorded ones: no DNS list
    reply that shows the client port or the time (rbl_reply_maps could: none), no `redis:`
    table (its answers can change while the replay runs). Policy servers and greylisting
    state are never asked (guards.NEVER); the tables are read-only (not edited during the
    replay)."""
    s = engine.settings
    if engine.tables.rbl_reply_maps is not None or any(
            macro in s.default_rbl_reply + s.dnsbl_reply for macro in UNCACHED_MACROS):
        return False
    names = set(cfg.defaults) | set(cfg.explicit)
    return not any("redis:" in cfg.expanded(name).lower() for name in names)


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
        # the cache: not for answers asked now (they change), see cacheable()
        self.cacheable = self.recorded is not None and cacheable(cfg, self.engine)
        self.known: Evaluations[Known] = Evaluations(PROBATION, KEPT)
        self.thens: Generations[str, Then] = Generations(THENS)
        self.limit = smtpd.message_size_limit
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        dns = self.engine.tables.dns
        if dns is not None:
            dns.resolver.close()
        self.loop.close()

    async def evaluate(self, tx: Transaction, raw: Answers | None = None) -> list[Now]:
        """The answers now for a transaction (its DNS answers, or `raw` ones, and its list
        entries recorded)."""
        dns = self.engine.tables.dns
        if self.recorded is not None and dns is not None:
            self.recorded.use(tx.dns, raw)
            dns.rbl_cache = RblCache()
            for query, entry in tx.rbl.items():
                dns.rbl_cache.put(query, entry)
        return await self.simulation.run(tx)

    def lines(self, lines: list[str]) -> Part:
        """Replay journal lines."""
        return self.loop.run_until_complete(self._lines(lines))

    async def _lines(self, lines: list[str]) -> Part:
        part = Part("", Summary())
        out: list[str] | None = [] if self.options.json else None
        for text in lines:
            if not text or text.isspace():
                continue
            try:
                line = self._read(text)
            except RecordError:
                part.bad += 1
                continue
            if self._wanted(line.head.time):
                await self._replay(line, part.summary, out)
        if out:
            out.append("")
            part.text = "\n".join(out)
        return part

    def _read(self, text: str) -> Line:
        """A line read; RecordError for a line that is not a record."""
        cut = text.find(FACTS)
        if cut < 0:
            raise RecordError("not a journal record")
        head = read_head(text, cut)
        then = self.thens.get(head.then)
        if then is None:
            then = decode_then(head.then)
            self.thens.put(head.then, then)
        line = Line(head, then, text[cut:])
        if self.cacheable:
            line.known = self.known.get(line.facts)
        if line.known is None:
            line.tx = decode_facts(line.facts, head, then, line.raw)
        return line

    async def _replay(self, line: Line, summary: Summary, out: list[str] | None) -> None:
        """Count a record (and write its JSON lines): evaluated, or as its facts were."""
        head, known = line.head, line.known
        oversized = bool(self.limit) and head.size > self.limit  # (the facts lack the size)
        if known is not None and not oversized:
            done = known.effect(head.then)
            if done is None:
                done = await self._again(line, known, summary)
            else:
                summary.cached += 1
        else:
            tx = line.transaction()
            now = await self.evaluate(tx, line.raw)
            done = effect(tx, replies_then(line.then, len(tx.recipients)), now)
            if self.cacheable and not oversized:
                self.known.put(line.facts, Known(then_key(line.then), head.then, done))
        made: list[Row] | None = None
        if out is not None:
            made = done.rows(line.transaction(), head.time)
            out += [row.json() for row in made]
        summary.add(head.time, done, lambda: made if made is not None else
                    done.rows(line.transaction(), head.time))

    async def _again(self, line: Line, known: Known, summary: Summary) -> Effect:
        """What a record of known facts with another `then` adds: evaluated again only if
        the simulation reads that `then` differently."""
        bits = then_key(line.then)
        tx = line.transaction()
        now = known.now(bits)
        if now is None:
            now = await self.evaluate(tx, line.raw)
            known.remember(bits, now)
        else:
            summary.cached += 1
        done = effect(tx, replies_then(line.then, len(tx.recipients)), now)
        known.keep(line.head.then, done)
        return done

    def _wanted(self, time: float) -> bool:
        o = self.options
        return (o.since is None or time >= o.since) and (o.until is None or time < o.until)
