"""The master's supervision: generations of worker processes, restarts, stop and reload.

A Generation is one configuration's processes. The Supervisor starts one, restarts its
workers when they die (throttling when they keep dying), and on SIGHUP asks for the next
generation, which starts while the old one stops accepting and drains; on SIGTERM every
generation drains and the loop ends when no child is left (decision 0058).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailgate.master import _STOP_SIGNALS, spawn


@dataclass(eq=False)
class Generation:
    """One configuration's processes: `count` of them running `worker(index)`. The `first`
    indexes (the accept process) are stopped before the others, so that no connection is
    accepted that no worker will take; `retired()` runs once all of them are gone."""

    count: int
    worker: Callable[[int], None]
    first: tuple[int, ...] = ()
    retired: Callable[[], None] = lambda: None
    stopping_since: float = 0.0  # when it was told to stop (0: it serves)
    rest_told: bool = False
    rest_signal: int = signal.SIGTERM  # SIGHUP when a reload retires it (long drain)
    # the workers hold the stop signals until their handlers are in place (a stop or
    # reload while one starts would otherwise kill it, and the sessions handed to it)
    holds_signals: bool = False
    started: Callable[[], None] = lambda: None  # once the previous generation stopped accepting


_GRACE = 5.0  # seconds the `first` processes have to end before the others are told


def run_workers(count: int | Generation, worker: Callable[[int], None] | None,
                log: Callable[[str], None], on_reopen: Callable[[], None],
                name: str = "smtpd", on_exit: Callable[[int], None] = lambda pid: None,
                throttle_max: float = 60.0,
                reload: Callable[[], Generation | None] | None = None,
                notify: Callable[[str], None] = lambda state: None,
                tick: Callable[[], None] = lambda: None) -> int:
    """Run a generation of workers (`count` running `worker(index)`, or a Generation);
    restart ones that die; stop on SIGTERM (the `first` ones, then the others, each told to
    finish what it has); on SIGHUP, `reload()` gives the next generation (None: keep this
    one), which starts at once while the old one finishes its sessions. `on_exit(pid)` is
    told of every worker that ended; `notify` of READY, RELOADING and STOPPING (systemd);
    `tick()` runs on every pass of the loop (at least twice a second: anvil's statistics).
    Like Postfix's master, it never gives up: when workers keep dying (more than 10
    restarts in a minute) it throttles, 1 s, then twice as long each time, up to
    `throttle_max`. Returns 0 after SIGTERM."""
    first = count if isinstance(count, Generation) else Generation(count, worker or _none)
    supervisor = Supervisor(first, log, name, on_exit, throttle_max, reload, notify,
                            on_reopen)
    supervisor.tick = tick
    return supervisor.run()


class Supervisor:
    """The master's loop: the generations' children, restarts, stop and reload."""

    def __init__(self, current: Generation, log: Callable[[str], None], name: str,
                 on_exit: Callable[[int], None], throttle_max: float,
                 reload: Callable[[], Generation | None] | None,
                 notify: Callable[[str], None], on_reopen: Callable[[], None]) -> None:
        self.current = current
        self.log, self.name, self.on_exit = log, name, on_exit
        self.throttle_max, self.reload, self.notify = throttle_max, reload, notify
        self.on_reopen = on_reopen
        self.children: dict[int, tuple[Generation, int]] = {}
        self.flags = {"stop": False, "reload": False}
        self.stopping = False
        self.master_pid = os.getpid()
        self.restarts: list[float] = []
        self.delay = 1.0
        self.tick: Callable[[], None] = lambda: None

    # --- processes ------------------------------------------------------------------
    def start(self, gen: Generation, index: int) -> None:
        # SIGTERM held while forking: a child forked but not yet in `children` would never
        # be told to stop, and the master would wait for it forever.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = spawn(index, gen.worker, self.master_pid, gen.holds_signals)
            self.children[pid] = (gen, index)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def tell(self, gen: Generation, first: bool) -> None:
        for pid, (owner, index) in list(self.children.items()):
            if owner is gen and (index in gen.first) == first:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if first else gen.rest_signal)

    def retire(self, gen: Generation, rest_signal: int = signal.SIGTERM) -> None:
        if not gen.stopping_since:
            gen.stopping_since = time.monotonic()
            gen.rest_signal = rest_signal
            self.tell(gen, first=True)
        elif rest_signal == signal.SIGTERM and gen.rest_signal != signal.SIGTERM:
            gen.rest_signal = signal.SIGTERM  # a stop during a reload's drain: stop's deadline
            if gen.rest_told:
                self.tell(gen, first=False)

    def generations(self) -> set[Generation]:
        return {owner for owner, _ in self.children.values()} | {self.current}

    def progress(self) -> None:
        """Tell the rest of a stopping generation once its first ones are gone."""
        now = time.monotonic()
        for gen in self.generations():
            if not gen.stopping_since or gen.rest_told:
                continue
            first_alive = any(g is gen and i in gen.first for g, i in self.children.values())
            if not first_alive or now - gen.stopping_since > _GRACE:
                gen.rest_told = True
                self.tell(gen, first=False)

    # --- signals --------------------------------------------------------------------
    def _stop(self, signum: int, frame: Any) -> None:
        self.flags["stop"] = True

    def _hangup(self, signum: int, frame: Any) -> None:
        self.flags["reload"] = True

    def _reopen(self, signum: int, frame: Any) -> None:
        self.on_reopen()
        self._forward(signal.SIGUSR1, frame)

    def _forward(self, signum: int, frame: Any) -> None:  # `mailgate queue flush`, reopen
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # --- the loop -------------------------------------------------------------------
    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        for sig, handler in ((signal.SIGTERM, self._stop), (signal.SIGINT, self._stop),
                             (signal.SIGHUP, self._hangup), (signal.SIGUSR1, self._reopen),
                             (signal.SIGUSR2, self._forward), (signal.SIGCHLD, _ignore)):
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # (serve held them)
        try:
            for index in range(self.current.count):
                if self.flags["stop"]:  # SIGTERM while starting: the rest never start
                    break
                self.start(self.current, index)
            self.notify("READY=1")
            while self.children or not self.stopping:
                with contextlib.suppress(InterruptedError):
                    select.select([wake_r], [], [], 0.5)
                with contextlib.suppress(OSError):
                    while os.read(wake_r, 512):
                        pass
                self.step()
                self.tick()
                if self.stopping and not self.children:
                    break
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)
        return 0

    def step(self) -> None:
        """One pass: a stop or reload asked for, the children that ended, the drains."""
        if self.flags["stop"] and not self.stopping:
            self.stopping = True
            self.notify("STOPPING=1")
            for gen in self.generations():
                self.retire(gen)
        if self.flags["reload"] and not self.stopping:
            self.flags["reload"] = False
            self.notify("RELOADING=1\nMONOTONIC_USEC="
                        f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            new = self.reload() if self.reload is not None else None
            if new is not None:
                old, self.current = self.current, new
                for index in range(new.count):
                    self.start(new, index)
                self.retire(old, signal.SIGHUP)
                wait_first(old, self.children)
                new.started()
            self.notify("READY=1")
        self.reap()
        self.progress()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            gen, index = self.children.pop(pid, (self.current, -1))
            if index >= 0:
                self.on_exit(pid)
            if gen.stopping_since or index < 0 or self.stopping:
                if gen.stopping_since and not any(g is gen for g, _ in self.children.values()):
                    gen.retired()
                continue
            self.restart(gen, index, pid, status)

    def restart(self, gen: Generation, index: int, pid: int, status: int) -> None:
        name = self.name
        self.log(f"warning: process {name} pid {pid} killed by signal {os.WTERMSIG(status)}"
                 if os.WIFSIGNALED(status) else
                 f"warning: process {name} pid {pid} exit status "
                 f"{os.waitstatus_to_exitcode(status)}")
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > 10:
            self.log(f"warning: {name}: workers keep dying -- throttling for {self.delay:g}s")
            deadline = time.monotonic() + self.delay
            while not self.flags["stop"] and time.monotonic() < deadline:
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))
            self.delay = min(self.delay * 2, self.throttle_max)
            if self.flags["stop"]:
                return
        elif len(self.restarts) == 1:
            self.delay = 1.0
        self.start(gen, index)


def wait_first(gen: Generation, children: dict[int, tuple[Generation, int]]) -> None:
    """Wait (bounded) until the `first` processes of a retired generation ended: from then
    on only the new one accepts. Their exits are reaped by the master's loop."""
    pids = [pid for pid, (owner, index) in children.items()
            if owner is gen and index in gen.first]
    deadline = time.monotonic() + _GRACE
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if pids:
            time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Whether a child is still running (a zombie counts as ended; not reaped here)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _none(index: int) -> None:
    raise RuntimeError("no worker function")


def _ignore(signum: int, frame: Any) -> None:
    """SIGCHLD: only wakes the master's loop (through the wakeup fd)."""
