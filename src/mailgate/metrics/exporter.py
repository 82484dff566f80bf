"""The metrics process: serves /metrics from the workers' shared files and the queue's size."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from mailgate.config.config import Config
from mailgate.config.settings import parse_listen
from mailgate.errors import ConfigError
from mailgate.master import listen_socket

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(directory: Path) -> None:
    """Empty the per-process files of an earlier run and point prometheus-client at them.
    Must run before any process imports prometheus_client (its value class is chosen then)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(directory)


def listen(cfg: Config, directory: Path) -> socket.socket | None:
    """`metrics_listen`: the HTTP socket, bound by the master so that the address is known
    before readiness (None: metrics off); the per-process files go under `directory`."""
    where = parse_listen(cfg.get_list("metrics_listen"), cfg.origin("metrics_listen"),
                         "metrics_listen")
    if not where:
        return None
    if len(where) > 1:
        raise ConfigError(f"{cfg.origin('metrics_listen')}: metrics_listen takes one address")
    prepare(directory)
    try:
        return listen_socket(where[0].host, where[0].port, 64)
    except OSError as exc:
        raise ConfigError(f"{cfg.origin('metrics_listen')}: cannot listen on "
                          f"{where[0].host}:{where[0].port}: {exc.strerror}") from exc


def processes(count: int, worker: Callable[[int], None], http: socket.socket | None,
              queues: Sequence[Path] | None) -> tuple[int, Callable[[int], None], Callable[[int], None]]:
    """run_workers() arguments for `count` workers plus, with an HTTP socket, the metrics
    process (the last index): the process count, what each runs, the exit hook. `queues`:
    the queue directories to count (the queue's own list, handed in: metrics sits below it)."""
    if http is None:
        return count, worker, lambda pid: None

    def run(index: int) -> None:
        if index == count:
            serve(http, queues)
            return
        http.close()
        worker(index)

    return count + 1, run, worker_exited


def worker_exited(pid: int) -> None:
    """A worker is gone: its live gauges (sessions, tarpit) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class QueueCollector:
    """mailgate_queue_messages{queue}: files in each queue directory (labelled with the
    directory's name), counted per scrape."""

    def __init__(self, queues: Sequence[Path]) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("mailgate_queue_messages", "Messages in the queue",
                                   labels=["queue"])
        for queue in self.queues:
            try:
                count = sum(1 for e in os.scandir(queue) if e.is_file())
            except OSError:
                count = 0
            family.add_metric([queue.name], count)
        yield family


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(sock: socket.socket, queues: Sequence[Path] | None) -> None:
    """Run the HTTP server on the master's socket until the process is stopped (queue sizes
    only with a queue: not for policyd)."""
    from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
    from prometheus_client.exposition import ThreadingWSGIServer

    for sig in (signal.SIGUSR1, signal.SIGUSR2):  # log reopen and queue flush: not ours
        signal.signal(sig, signal.SIG_IGN)

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[ENV])  # type: ignore[no-untyped-call]
    if queues is not None:
        registry.register(QueueCollector(queues))
    httpd = ThreadingWSGIServer(sock.getsockname()[:2], _Quiet, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = sock
    httpd.server_name, httpd.server_port = "localhost", sock.getsockname()[1]
    httpd.setup_environ()
    httpd.set_app(make_wsgi_app(registry))
    httpd.serve_forever()
