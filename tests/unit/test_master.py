"""The master's worker supervision: a worker that keeps dying makes it give up with status 1."""

from __future__ import annotations

import signal

from mailgate.master import run_workers


def test_master_gives_up_on_workers_that_keep_dying() -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                                             signal.SIGUSR2)}
    logged: list[str] = []
    exited: list[int] = []

    def worker(index: int) -> None:
        raise RuntimeError("cannot start")

    try:
        code = run_workers(2, worker, logged.append, lambda: None, on_exit=exited.append)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code == 1
    assert logged[-1] == "fatal: workers keep dying -- giving up"
    assert sum(x.startswith("warning: process smtpd pid ") for x in logged) == 11
    assert len(exited) >= 11
