"""The master's worker supervision: workers that keep dying are throttled, never given up on."""

from __future__ import annotations

import os
import signal

from mailgate.supervisor import run_workers


def test_master_throttles_workers_that_keep_dying() -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                                             signal.SIGUSR2)}
    logged: list[str] = []
    exited: list[int] = []

    def worker(index: int) -> None:
        raise RuntimeError("cannot start")

    def log(text: str) -> None:
        logged.append(text)
        if sum("throttling" in x for x in logged) == 2:  # still restarting: stop it now
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        code = run_workers(2, worker, log, lambda: None, on_exit=exited.append,
                           throttle_max=0.2)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code == 0
    throttled = [x for x in logged if "throttling" in x]
    assert throttled[:2] == ["warning: smtpd: workers keep dying -- throttling for 1s",
                             "warning: smtpd: workers keep dying -- throttling for 0.2s"]
    assert sum(x.startswith("warning: process smtpd pid ") and x.endswith("exit status 1")
               for x in logged) >= 11
    assert len(exited) >= 11


def test_default_workers_one_per_cpu_behind_the_accept_process() -> None:
    """smtpd_processes = 0: one per CPU behind the accept process (decision 0049); without
    it, spare workers to accept during long passes (decision 0048)."""
    from mailgate.serve import default_workers

    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 64)] == [1, 2, 3, 4, 8, 64]
    assert [default_workers(n, False) for n in (1, 2, 3, 4, 8, 64)] == [2, 4, 6, 8, 12, 68]
