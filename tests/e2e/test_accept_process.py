"""The accept process (decision 0049): it greets, spreads sessions over the workers, and the
master replaces it, or a worker, after kill -9 without losing a connection."""

from __future__ import annotations

import os
import re
import signal
import smtplib

from conftest import Server, wait_until


def session_pids(server: Server) -> list[int]:
    """The worker pid of each `connect from` line, in order."""
    text = server.log_path.read_text() if server.log_path.exists() else ""
    return [int(pid) for pid in re.findall(r"/smtpd\[(\d+)\]: connect from ", text)]


def deliver(server: Server, rcpt: str = "alice@example.test") -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=15) as smtp:
        smtp.ehlo("client.test")
        refused = smtp.sendmail("sender@client.test", [rcpt], b"Subject: a\r\n\r\nbody\r\n")
        assert refused == {}


def test_concurrent_sessions_are_spread_over_the_workers(server: Server) -> None:
    clients = [smtplib.SMTP("127.0.0.1", server.port, timeout=10) for _ in range(4)]
    try:
        for client in clients:
            assert client.ehlo("client.test")[0] == 250  # all four sessions are running
        wait_until(lambda: len(session_pids(server)) == 4)
        pids = session_pids(server)
        assert sorted(pids.count(pid) for pid in set(pids)) == [2, 2], pids
    finally:
        for client in clients:
            client.quit()
    children = server.workers()
    assert len(children) == 3 and set(pids) < set(children)  # two workers, the accept process


def test_a_killed_accept_process_is_replaced_and_waiting_clients_served(server: Server) -> None:
    deliver(server)
    deliver(server)
    deliver(server)
    workers = set(session_pids(server))
    (acceptor,) = set(server.workers()) - workers
    os.kill(acceptor, signal.SIGKILL)
    deliver(server)  # queued in the listening socket's backlog until the new one accepts it
    server.wait_log(rf"master: warning: process smtpd pid {acceptor} killed by signal 9")
    assert len(server.maildir_files("alice")) == 4
    assert set(server.workers()) - workers - {acceptor}  # its replacement


def test_a_killed_worker_leaves_the_others_serving(server: Server) -> None:
    deliver(server)
    deliver(server)
    victim = session_pids(server)[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_log(rf"master: warning: process smtpd pid {victim} killed by signal 9")
    for _ in range(4):
        deliver(server)
    assert len(server.maildir_files("alice")) == 6
    assert victim not in session_pids(server)[2:]


def test_without_the_accept_process_the_workers_accept(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_accept_process="no").start()
    deliver(server)
    assert len(server.workers()) == 2
    assert len(server.maildir_files("alice")) == 1


def test_sigterm_while_the_children_start_stops_them_all(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A SIGTERM that arrives while the master forks must reach every child: one forked but
    not yet registered used to be left running, and the master waited for it forever."""
    import subprocess

    for attempt in range(5):
        server = Server(tmp_path / f"mg{attempt}")
        (server.root / "etc").mkdir(parents=True)
        server.start()  # readiness comes before the workers are forked
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        try:  # (before its handler is set, SIGTERM's default action ends the master: fine)
            assert server.proc.wait(10) in (0, -signal.SIGTERM)
        except subprocess.TimeoutExpired:
            left = server.workers()
            server.proc.kill()
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"attempt {attempt}: the master still waits for {left}") from None
        finally:
            server.stop()
