"""`mailgate serve`: the master's start-up (bind, recover, workers, metrics) and a worker's main."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailgate import acceptor
from mailgate.acceptor import Handoff
from mailgate.anvil import AnvilStatistics, ConnectionTable
from mailgate.app import App, restriction_lists
from mailgate.app.helper import helper_main
from mailgate.app.listeners import Listeners, smtpd_listeners
from mailgate.config.config import Config
from mailgate.config.settings import DeliverySettings, ListenAddress, SmtpdSettings
from mailgate.delivery.helper import HelperClient
from mailgate.dns.resolver import Resolver
from mailgate.engine.greylist import GreylistSettings
from mailgate.engine.settings import EngineSettings
from mailgate.errors import ConfigError
from mailgate.journal import create as create_journal
from mailgate.maillog import MailLog
from mailgate.maps.keycheck import stale_tables
from mailgate.master import accept_stop_signals, address, bind, spawn
from mailgate.metrics import create as create_metrics
from mailgate.metrics import exporter
from mailgate.notify import systemd_notify
from mailgate.policy.client import clients as policy_clients
from mailgate.privileges import Owner, drop, hand_file, hand_over, mail_owner, preload
from mailgate.queue.commands import write_pid
from mailgate.queue.store import QUEUES, QueueStore
from mailgate.server.tls import server_context
from mailgate.state.settings import StateSettings
from mailgate.supervisor import Generation, run_workers


def raise_fd_limit() -> None:
    """Thousands of tarpitted clients need file descriptors: lift the soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def worker_main(cfg: Config, listeners: Listeners, connections: ConnectionTable,
                      recovered: list[str], index: int, workers: int, metrics: bool,
                      handoff: Handoff | None = None, tls_secret: bytes = b"",
                      owner: Owner | None = None, helper: Helper | None = None) -> None:
    """One smtpd worker: sessions, queue manager and delivery in one event loop; worker 0
    also runs the deferred queue and takes over dead workers' messages. With `handoff`,
    its connections come from the accept process instead of the listening sockets. With
    `owner`, it loads its tables and keys as root, then becomes mail_owner before it reads
    a client's first byte; `helper` then writes its Maildirs."""
    counted = create_metrics(metrics)
    app = App.build(cfg, connections, metrics=counted, worker=index, workers=workers,
                    specs=listeners.specs, tls_secret=tls_secret,
                    helper=HelperClient(helper.sock) if helper is not None else None)
    drop(owner)
    if handoff is not None:
        for sock in listeners.sockets:
            sock.close()
        await app.start([], recovered, retries=index == 0)
        await app.server.start_handed(handoff, index,
                                      [app.servers[r] for r in listeners.routes])
    else:
        await app.start(listeners.sockets, recovered, retries=index == 0,
                        routes=listeners.routes)
    counted.start(asyncio.get_running_loop())
    gc.freeze()  # tables, settings and imported modules live forever: out of collections
    stop = asyncio.Event()
    drain = [0.0]
    loop = asyncio.get_running_loop()

    def stopping(seconds: float) -> None:
        drain[0] = seconds
        stop.set()

    # SIGTERM: `mailgate stop`; SIGHUP: a reload retires this worker (its sessions keep
    # their configuration to their end, bounded by the session deadline)
    loop.add_signal_handler(signal.SIGTERM, stopping, app.smtpd.shutdown_timeout)
    loop.add_signal_handler(signal.SIGINT, stopping, app.smtpd.shutdown_timeout)
    loop.add_signal_handler(signal.SIGHUP, stopping, max(app.smtpd.session_deadline, 3600.0))
    loop.add_signal_handler(signal.SIGUSR1, app.reopen)  # maillog_file, the journal
    loop.add_signal_handler(signal.SIGUSR2, app.qmgr.flush_soon)
    accept_stop_signals()
    await stop.wait()
    await app.stop(drain[0])
    counted.stop()
    if helper is not None:  # it exits once our connection is closed and its writes are done
        await loop.run_in_executor(None, os.waitpid, helper.pid, 0)


@dataclass(frozen=True)
class Helper:
    """A worker's root delivery helper: its process and the worker's end of the socket."""

    pid: int
    sock: socket.socket


def start_helper(cfg: Config, owner: Owner, inherited: list[socket.socket],
                 handoff: Handoff | None) -> Helper:
    """Fork the worker's delivery helper (before the worker gives up root). It keeps root,
    closes what the worker inherited, dies with the worker and holds its stop signals: it
    stops when the worker closes the connection (decision 0059)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def child(_: int) -> None:
        for sock in (*inherited, ours):
            sock.close()
        if handoff is not None:
            handoff.close()
        run_loop(helper_main(cfg, theirs, owner))

    pid = spawn(0, child, os.getpid(), holds_signals=True)
    theirs.close()
    return Helper(pid, ours)


def hand_journal(cfg: Config, owner: Owner | None) -> None:
    """The transaction journal made (if missing) and given to mail_owner, as maillog_file,
    so that the workers can open it again after a rotation."""
    path = cfg.get_str("transaction_journal")
    if path:
        try:
            create_journal(path)
        except OSError as exc:
            raise ConfigError(f"transaction_journal = {path}: {exc.strerror}") from exc
        hand_file(path, owner)


def default_workers(cpus: int, accept_process: bool = True) -> int:
    """smtpd_processes = 0: one worker per CPU behind the accept process, which greets
    (decision 0049); without it (smtpd_accept_process = no) the workers accept, only between
    two passes of their event loops, which take up to a hundred milliseconds under a burst,
    so one worker per CPU and as many again, up to four more, for one of them to be back in
    epoll to greet (decision 0048)."""
    return cpus if accept_process else cpus + min(cpus, 4)


def run_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def check_config(cfg: Config) -> tuple[SmtpdSettings, EngineSettings, Listeners]:
    """Everything that must load before a configuration serves (start-up or reload): the
    settings, the restriction lists (no open relay), certificates, master.cf, policy
    services, resolver_servers. ConfigError names the file, line and what is wrong."""
    smtpd = SmtpdSettings.from_config(cfg)
    DeliverySettings.from_config(cfg)
    engine = EngineSettings.from_config(cfg)  # refuse an open relay before binding anything
    server_context(smtpd.tls)  # a certificate that does not load stops start-up here
    listeners = smtpd_listeners(cfg)  # a refused master.cf line stops it too
    policy_clients(cfg, restriction_lists(cfg))  # bad services
    mail_owner(cfg)  # started as root: a user to become
    StateSettings.from_config(cfg)  # redis_* parameters, the password file
    GreylistSettings.from_config(cfg)  # greylist_action
    try:  # a malformed resolver_servers item: here, not in every worker
        Resolver(cfg.get_list("resolver_servers"))
    except ValueError as exc:
        raise ConfigError(f"{cfg.origin('resolver_servers')}: {exc}") from exc
    if not cfg.get_bool("smtpd_accept_process") and any(
            SmtpdSettings.from_config(spec.config).tls.wrappermode for spec in listeners.specs):
        raise ConfigError(f"{cfg.origin('smtpd_accept_process')}: smtpd_tls_wrappermode = "
                          "yes needs smtpd_accept_process = yes (the default)")
    return smtpd, engine, listeners


_STATUS = {"READY": "\nSTATUS=Accepting mail", "RELOADING": "\nSTATUS=Reloading the configuration",
           "STOPPING": "\nSTATUS=Stopping: sessions are finishing"}


def _nothing() -> None:
    pass


@dataclass
class Serving:
    """What the master keeps across reloads: the queue, the shared tables, the bound
    listening sockets by address (kept open while any configuration listens there)."""

    store: QueueStore
    connections: ConnectionTable
    http: socket.socket | None
    log: MailLog
    recovered: list[str]
    tls_secret: bytes
    bound: dict[ListenAddress, socket.socket] = field(default_factory=dict)

    def sockets(self, addresses: list[ListenAddress]) -> list[socket.socket]:
        """Listening sockets for these addresses: the ones already bound, new ones bound."""
        fresh = [a for a in dict.fromkeys(addresses) if a not in self.bound]
        for where, sock in zip(fresh, bind(tuple(fresh)), strict=True):
            self.bound[where] = sock
        return [self.bound[a] for a in addresses]

    def release(self, keep: list[ListenAddress]) -> None:
        """Close the listening sockets no configuration uses any more (a master.cf service
        removed by a reload), once the old accept process has stopped."""
        for where in [a for a in self.bound if a not in keep]:
            self.bound.pop(where).close()

    def generation(self, cfg: Config, listeners: Listeners, first: bool,
                   started: Callable[[], None] = _nothing) -> Generation:
        """The processes of one configuration: workers, the accept process, the metrics
        process; `first`: the start-up one (it recovers the queue)."""
        accept_process = cfg.get_bool("smtpd_accept_process")
        greeters = [acceptor.Greeter.from_settings(
            SmtpdSettings.from_config(listeners.specs[route].config),
            screened=listeners.specs[route].postscreen is not None,
            shared=StateSettings.from_config(listeners.specs[route].config).redis)
            for route in listeners.routes]
        workers = cfg.get_int("smtpd_processes") or default_workers(os.cpu_count() or 1,
                                                                    accept_process)
        handoff = Handoff(workers) if accept_process else None
        sockets = listeners.sockets
        recovered = self.recovered if first else []

        owner = mail_owner(cfg)

        def worker(index: int) -> None:
            if index == workers:  # the accept process (decision 0049)
                assert handoff is not None
                drop(owner)
                acceptor.run(sockets, handoff, self.connections, greeters)
                return
            helper = start_helper(cfg, owner, sockets, handoff) if owner else None
            run_loop(worker_main(cfg, listeners, self.connections,
                                 recovered if index == 0 else [], index, workers,
                                 metrics=self.http is not None, handoff=handoff,
                                 tls_secret=self.tls_secret, owner=owner, helper=helper))

        count, work, _ = exporter.processes(workers + (handoff is not None), worker,
                                            self.http, [self.store.root / n for n in QUEUES])
        processes = workers + (handoff is not None)

        def run(index: int) -> None:
            for sock in self.bound.values():  # another generation's listeners: not ours
                if sock not in sockets:
                    sock.close()
            if index >= processes:  # the metrics process: no handlers of its own
                drop(owner)
                accept_stop_signals()
            work(index)

        return Generation(count, run, first=(workers,) if handoff is not None else (),
                          retired=handoff.close if handoff is not None else _nothing,
                          holds_signals=True, started=started)


def run(cfg: Config, reload: Callable[[], Config] | None = None) -> int:
    """`mailgate serve`: bind, recover the queue, start the workers; print a readiness line.
    SIGHUP: `reload()` reads the configuration again; a new generation of processes serves
    it while the old one finishes its sessions; one that does not load is logged and the
    running one kept (docs/operations.md)."""
    smtpd, engine, listeners = check_config(cfg)
    raise_fd_limit()
    log = MailLog.from_config(cfg, utf8=smtpd.smtputf8_enable)
    store = QueueStore(DeliverySettings.from_config(cfg).queue_directory)
    recovered = store.recover()
    http = exporter.listen(cfg, store.root / "metrics")
    owner = mail_owner(cfg)
    if owner is not None:
        preload(metrics=http is not None)
    state = Path(cfg.get_str("state_database")).parent
    state.mkdir(parents=True, exist_ok=True)  # the workers' shared state (decision 0061)
    hand_over([store.root / name for name in (*QUEUES, "spare", "metrics")] + [state], owner)
    hand_file(log.path, owner)
    hand_journal(cfg, owner)
    serving = Serving(store, ConnectionTable(), http, log, recovered, os.urandom(32))
    sockets = listeners.sockets = serving.sockets(listeners.addresses)
    write_pid(store.root)  # for `mailgate queue flush`, `mailgate stop`, `status`
    for warning in (*cfg.warnings, *cfg.unused_parameters()):
        log.warning("master", warning)
    log.log("master", f"daemon started -- version {cfg.get_str('mail_version')}, "
            f"configuration {cfg.config_dir or '(embedded)'}")
    for warning in engine.startup_warnings():  # smtpd's own start-up check, logged once
        log.warning("smtpd", warning)
    for warning in (*listeners.warnings, *stale_tables(cfg)):
        log.warning("master", warning)
    # a stop or reload right after the readiness line waits for the master's handlers
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    print("mailgate: listening on " + " ".join(address(s) for s in sockets), flush=True)
    if http is not None:
        print(f"mailgate: metrics on http://{address(http)}/metrics", flush=True)

    def reloaded() -> Generation | None:
        try:
            new_cfg = reload() if reload is not None else cfg
            _, new_engine, new_listeners = check_config(new_cfg)
            new_listeners.sockets = serving.sockets(new_listeners.addresses)
            hand_over([store.root / name for name in (*QUEUES, "spare", "metrics")],
                      mail_owner(new_cfg))
        except (ConfigError, OSError) as exc:
            log.log("master", f"error: reload: {exc}; keeping the running configuration")
            return None
        def started() -> None:  # the old accept process has stopped: the switch is done
            serving.release(new_listeners.addresses)
            statistics.configure(new_cfg.get_time("anvil_status_update_time"),
                                 new_cfg.get_time("anvil_rate_time_unit"))
            warnings = (*new_cfg.warnings, *new_cfg.unused_parameters(),  # (before the
                        *new_engine.startup_warnings(), *new_listeners.warnings,  # line
                        *stale_tables(new_cfg))  # that says the reload is done: its state)
            log.log("master", f"reload -- version {new_cfg.get_str('mail_version')}, "
                    f"configuration {new_cfg.config_dir or '(embedded)'}")
            for warning in warnings:
                log.warning("master", warning)

        return serving.generation(new_cfg, new_listeners, first=False, started=started)

    def reopen() -> None:  # before the workers do: the new file is theirs to open
        log.reopen()
        hand_file(log.path, owner)
        with contextlib.suppress(ConfigError):  # (the workers keep the file they have)
            hand_journal(cfg, owner)

    # anvil's statistics: the master reads the shared table (decision 0062)
    statistics = AnvilStatistics(serving.connections, lambda text: log.log("anvil", text),
                                 cfg.get_time("anvil_status_update_time"),
                                 cfg.get_time("anvil_rate_time_unit"))
    code = run_workers(serving.generation(cfg, listeners, first=True), None,
                       lambda text: log.log("master", text), reopen,
                       on_exit=lambda pid: serving.connections.worker_died(),
                       reload=reloaded, notify=lambda state: systemd_notify(
                           state + _STATUS.get(state.split("=", 1)[0], "")),
                       tick=statistics.tick)
    statistics.dump()  # what anvil logs when it exits
    if not code:
        log.log("master", "terminating on signal")
    log.close()
    return code
