"""Wires a Config into a running worker: the queue, the queue manager, and one SMTP server per
smtpd service (smtpd_listen, or master.cf's inet smtpd lines with their -o settings)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailgate.addressing import AddressResolver
from mailgate.anvil import ConnectionTable
from mailgate.app.wiring import (
    DEMO_MAIN_CF,
    build_engine,
    build_resolver,
    client_matcher,
    client_pair_matcher,
    committer,
    domain_matcher,
    interface_addresses,
    mynetworks_patterns,
    restriction_lists,
    string_matcher,
)
from mailgate.autoblock import NO_BLOCKS, AutoBlocks, Blocks, BlockSettings
from mailgate.config.config import Config
from mailgate.config.settings import DeliverySettings, SmtpdSettings
from mailgate.delivery.agent import Agent
from mailgate.delivery.helper import HelperAgent, HelperClient
from mailgate.delivery.maildir import MaildirAgent
from mailgate.delivery.router import Router, Transports
from mailgate.delivery.smtp import SmtpAgent
from mailgate.delivery.smtpclient import Timeouts
from mailgate.engine.context import Client
from mailgate.engine.engine import Engine
from mailgate.journal import NO_JOURNAL, Journal, open_journal
from mailgate.maillog import MailLog
from mailgate.maps import Map, MapOptions, Registry, default_registry
from mailgate.maps.matchlist import HostAddrList
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.queue.durable import DurableRenamer
from mailgate.queue.manager import QueueManager
from mailgate.queue.space import minfree_warning
from mailgate.queue.store import QueueStore
from mailgate.sasl.server import SaslServer
from mailgate.server.commands import ForbiddenCommands
from mailgate.server.listener import SmtpServer
from mailgate.server.postscreen import Postscreen
from mailgate.server.session import Services
from mailgate.server.tls import server_context, set_ticket_keys
from mailgate.state import Store
from mailgate.state.open import open_store
from mailgate.state.settings import StateSettings

__all__ = ["DEMO_MAIN_CF", "App", "SmtpdSpec", "build_engine", "build_resolver", "interface_addresses",
           "restriction_lists", "string_matcher"]


@dataclass(frozen=True, slots=True)
class SmtpdSpec:
    """One smtpd service a worker runs: its master.cf name (None without a master.cf: the
    listening address names it, as Postfix's reference instance) and its configuration
    (main.cf with the service's -o settings; main.cf itself without a master.cf);
    `postscreen`: the postscreen line's configuration when postscreen screens its clients."""

    name: str | None
    config: Config
    postscreen: Config | None = None


@dataclass
class Shared:
    """What every smtpd service of a worker uses: tables, queue, queue manager, log."""

    registry: Registry
    delivery: DeliverySettings
    log: MailLog
    store: QueueStore
    qmgr: QueueManager
    renamer: DurableRenamer
    connections: ConnectionTable
    metrics: Metrics
    fsync: bool
    state: Store  # client state the workers share (decision 0061)
    journal: Journal = NO_JOURNAL  # transaction_journal (decision 0067)


@dataclass
class App:
    """Everything `mailgate serve` runs in one worker, built once from a Config."""

    config: Config
    smtpd: SmtpdSettings
    delivery: DeliverySettings
    log: MailLog
    store: QueueStore
    qmgr: QueueManager
    servers: list[SmtpServer]
    renamer: DurableRenamer
    tls_secret: bytes = b""  # the master's: every worker derives the same ticket keys
    helper: HelperClient | None = None  # the root process that writes Maildirs
    journal: Journal = NO_JOURNAL  # transaction_journal (decision 0067)

    @property
    def server(self) -> SmtpServer:
        """The first smtpd service (the only one without a master.cf)."""
        return self.servers[0]

    @classmethod
    def build(cls, cfg: Config, connections: ConnectionTable, fsync: bool = True,
              metrics: Metrics = NO_METRICS, worker: int = 0, workers: int = 1,
              specs: Sequence[SmtpdSpec] = (), tls_secret: bytes = b"",
              helper: HelperClient | None = None) -> App:
        """Build a worker's components; call inside its running event loop. `specs`: the
        smtpd services, in listener order (default: one, main.cf's); `helper`: Maildirs
        are written by that root process (the worker runs as mail_owner)."""
        registry = default_registry(MapOptions.from_config(cfg))
        smtpd = SmtpdSettings.from_config(cfg)
        delivery = DeliverySettings.from_config(cfg)
        log = MailLog.from_config(cfg, utf8=smtpd.smtputf8_enable)
        registry.warn = lambda text: log.log("smtpd", f"warning: {text}")
        if (minfree := minfree_warning(smtpd.queue_minfree, smtpd.message_size_limit)):
            log.log("smtpd", f"warning: {minfree}")  # as each Postfix smtpd at start-up
        local = interface_addresses(cfg, [a.host for a in smtpd.listen])
        smtpd_log = functools.partial(log.log, "smtpd")
        resolver = build_resolver(cfg, registry, local, smtpd_log)
        state = open_store(StateSettings.from_config(cfg),  # shared by the workers (0061)
                           lambda text: log.log("smtpd", f"warning: {text}"),
                           observe=metrics.state_backend)
        if state.shared:
            metrics.state_backend(True)
        engine, vmaps = build_engine(cfg, registry, resolver, smtpd_log, local, metrics=metrics,
                                     state=state)
        store = QueueStore(delivery.queue_directory, fsync=fsync, slot=worker,
                           slots=workers)
        renamer = DurableRenamer(asyncio.get_running_loop())
        qmgr = QueueManager(store, delivery, build_router(cfg, registry, resolver, vmaps),
                            build_agents(cfg, smtpd, delivery, engine, renamer, fsync,
                                         helper), log,
                            metrics=metrics, deaths=connections.deaths)
        shared = Shared(registry, delivery, log, store, qmgr, renamer, connections, metrics,
                        fsync, state)
        shared.journal = open_journal(cfg, lambda text: log.log("smtpd", f"warning: {text}"))
        servers = [smtpd_server(spec.config, shared, engine if spec.config is cfg else None,
                                spec.name, spec.postscreen)
                   for spec in (specs or (SmtpdSpec(None, cfg),))]
        return cls(cfg, smtpd, delivery, log, store, qmgr, servers, renamer, tls_secret,
                   helper, journal=shared.journal)

    async def start(self, sockets: list[socket.socket], recovered: list[str],
                    retries: bool, routes: Sequence[int] = ()) -> None:
        """Start the queue manager, then serve: socket i belongs to servers[routes[i]]
        (all to the first without `routes`)."""
        loop = asyncio.get_running_loop()
        self.log.batch_in(loop)
        self.journal.batch_in(loop)
        if self.helper is None:  # (else the helper, as root)
            Path(self.delivery.virtual_mailbox_base).mkdir(parents=True, exist_ok=True)
        await self.qmgr.start(recovered, retries)
        self.rotate_ticket_keys()
        for index, server in enumerate(self.servers):
            await server.start([sock for i, sock in enumerate(sockets)
                                if (routes[i] if routes else 0) == index])

    def rotate_ticket_keys(self) -> None:
        """TLS session tickets any worker can resume: keys derived from the master's secret
        for the current smtpd_tls_session_cache_timeout period, renewed at its end."""
        if not self.tls_secret:
            return
        loop = asyncio.get_running_loop()
        nearest = 0.0
        for server in self.servers:
            ctx, life = server.services.tls_context, server.settings.tls.session_cache_timeout
            if ctx is None or life <= 0:
                continue
            period = int(time.time() // life)
            if set_ticket_keys(ctx, self.tls_secret, period):
                left = (period + 1) * life - time.time()
                nearest = left if not nearest else min(nearest, left)
        if nearest:
            loop.call_later(nearest + 0.01, self.rotate_ticket_keys)

    def reopen(self) -> None:
        """SIGUSR1 (`mailgate postlog reopen`): maillog_file and the transaction journal
        are opened again (log rotation)."""
        self.log.reopen()
        self.journal.reopen()

    async def stop(self, drain: float = 0.0) -> None:
        """Stop every service (sessions may finish for `drain` seconds), then delivery."""
        for server in self.servers:
            server.stop_accepting()
        await asyncio.gather(*(server.stop(drain) for server in self.servers))
        for server in self.servers:
            dns = server.services.engine.tables.dns
            if dns is not None:
                dns.resolver.close()
        await self.qmgr.stop()
        if self.helper is not None:
            await self.helper.close()
        self.renamer.stop()
        for server in self.servers:  # the connections that ended, to the site's counts
            if server.limits.site is not None:
                await server.limits.site.drain()
        await self.servers[0].services.engine.tables.state.aclose()
        self.journal.close()
        self.log.close()


def build_router(cfg: Config, registry: Registry, resolver: AddressResolver,
                 vmaps: Map | None) -> Router:
    delivery = DeliverySettings.from_config(cfg)
    return Router(resolver, vmaps, delivery.virtual_mailbox_base, delivery.home_mailbox,
                  delivery.recipient_delimiter,
                  registry.open_list(cfg.get_list("virtual_uid_maps")),
                  registry.open_list(cfg.get_list("virtual_gid_maps")),
                  Transports.from_config(cfg, registry))


def build_agents(cfg: Config, smtpd: SmtpdSettings, delivery: DeliverySettings,
                 engine: Engine, renamer: DurableRenamer, fsync: bool,
                 helper: HelperClient | None = None) -> dict[str, Agent]:
    """The delivery agents: Maildir (virtual, local; through `helper` when there is one)
    and SMTP/LMTP clients."""
    agents: dict[str, Agent] = {
        name: HelperAgent(name, helper) if helper is not None
        else MaildirAgent(name, smtpd.myhostname, renamer, fsync)
        for name in ("virtual", "local")}
    dns = engine.tables.dns
    for name in ("smtp", "relay", "lmtp"):
        agents[name] = SmtpAgent(name, cfg.get_str("smtp_helo_name") or smtpd.myhostname,
                                 dns.resolver if dns else None, engine.tables.names,
                                 Timeouts(*delivery.smtp_timeouts),
                                 delivery.destination_concurrency, delivery.smtp_tls,
                                 recipient_limit=delivery.destination_recipients,
                                 line_length_limit=delivery.lmtp_line_length_limit
                                 if name == "lmtp" else delivery.smtp_line_length_limit)
    return agents


def smtpd_server(cfg: Config, shared: Shared, engine: Engine | None = None,
                 name: str | None = None, postscreen: Config | None = None) -> SmtpServer:
    """One smtpd service's server: its settings, log name, engine (`engine`: main.cf's,
    already built), TLS and SASL, over the worker's shared queue and tables; postscreen
    in front with `postscreen` (the postscreen line's configuration)."""
    registry, delivery, qmgr = shared.registry, shared.delivery, shared.qmgr
    smtpd = SmtpdSettings.from_config(cfg)
    log = shared.log.named(smtpd.syslog_name, smtpd.smtputf8_enable)
    local = interface_addresses(cfg, [a.host for a in smtpd.listen])
    if engine is None:
        smtpd_log = functools.partial(log.log, "smtpd")
        resolver = build_resolver(cfg, registry, local, smtpd_log)
        engine, _ = build_engine(cfg, registry, resolver, smtpd_log, local,
                                 metrics=shared.metrics, state=shared.state)

    def warn(text: str) -> None:
        log.log("smtpd", f"warning: {text}")

    services = Services(
        engine=engine, store=shared.store, log=log,
        forbidden=ForbiddenCommands.build(smtpd.forbidden_commands, registry),
        local_addresses=local, on_queued=qmgr.enqueue,
        commit=committer(shared.store, shared.renamer, shared.fsync), clock=time.time,
        deliver_first=qmgr.deliver_first if delivery.direct_delivery else None,
        bare_newline_exempt=client_matcher(
            cfg.get_list("smtpd_forbid_bare_newline_exclusions"), registry),
        xclient_hosts=client_matcher(cfg.get_list("smtpd_authorized_xclient_hosts"),
                                     registry),
        flush_domains=domain_matcher(cfg, "fast_flush_domains", registry),
        flush_queue=lambda: qmgr.flush_soon(), metrics=shared.metrics,
        tls_context=server_context(smtpd.tls),
        sasl=SaslServer.build(smtpd.sasl, Path(delivery.queue_directory), warn=warn,
                              exempt=client_pair_matcher(
                                  smtpd.sasl.exceptions_networks, registry)))
    services.blocks = auto_blocks(cfg, shared, log, services.xclient_hosts)
    services.journal, services.engine = shared.journal, shared.journal.engine(engine)
    explicit = any(cfg.is_set(name) for name in ("smtpd_client_event_limit_exceptions",
                                                 "smtpd_client_connection_limit_exceptions"))
    exceptions = HostAddrList.build(  # (set empty: nobody is exempt, as in Postfix)
        cfg.get_list("smtpd_client_event_limit_exceptions")
        if explicit else mynetworks_patterns(cfg), registry)
    server = SmtpServer(smtpd, services, exceptions, shared.connections, name=name)
    if postscreen is not None:  # decision 0065
        server.postscreen = Postscreen.build(postscreen, registry, engine, shared.log)
        server.greeter = dataclasses.replace(server.greeter, screened=True)
    return server


def auto_blocks(cfg: Config, shared: Shared, log: MailLog,
                trusted: Callable[[Client], bool]) -> Blocks:
    """A service's automatic blocks (auto_block_*; NO_BLOCKS when the threshold is 0) over
    the worker's state store; `trusted`: the XCLIENT proxies, never counted themselves."""
    settings = BlockSettings.from_config(cfg, mynetworks_patterns(cfg))
    if not settings.enabled:
        return NO_BLOCKS
    exceptions = HostAddrList.build(settings.exceptions, shared.registry,
                                    origin="auto_block_exceptions")
    return AutoBlocks(settings, shared.state, exceptions, functools.partial(log.log, "smtpd"),
                      shared.metrics, trusted)
