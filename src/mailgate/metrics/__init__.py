"""The events mailgate counts for Prometheus; this base class counts nothing (metrics off).

Components are handed a Metrics object (as they are handed a clock and a resolver) and call
one small method per event. With `metrics_listen` unset they get this class, whose methods
do nothing; with it set, `mailgate.metrics.prom.PrometheusMetrics`.
"""

from __future__ import annotations

import asyncio

# SMTP verbs counted by name; anything else is counted as "other" (labels stay bounded).
VERBS = frozenset({"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
                   "VRFY", "ETRN", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD", "EXPN", "HELP"})


class Metrics:
    """Counts nothing. Subclasses override what they export."""

    enabled = False

    def start(self, loop: asyncio.AbstractEventLoop, interval: float = 0.2) -> None:
        """Begin publishing (on the worker's event loop)."""

    def stop(self) -> None:
        """Publish what is left."""

    def connection(self, delta: int) -> None:
        """A session started (+1) or ended (-1)."""

    def tarpit(self, delta: int, seconds: float = 0.0) -> None:
        """A session starts (+1, delayed `seconds`) or stops (-1) waiting in the tarpit."""

    def command(self, verb: str) -> None:
        """A command arrived (upper-case verb)."""

    def reply(self, code: int) -> None:
        """A reply was sent."""

    def reject(self, stage: str, restriction: str, table: str, warn_only: bool) -> None:
        """A restriction rejected (or, under warn_if_reject, would have)."""

    def message(self, result: str) -> None:
        """A message got its 250: accepted, held, filtered or discarded."""

    def delivery(self, transport: str, result: str) -> None:
        """A recipient's delivery attempt ended: sent, deferred, bounced, expired."""

    def dns(self, rdtype: str, result: str, seconds: float) -> None:
        """A DNS query went to a server (cache hits are not lookups)."""

    def dnsbl_hit(self, domain: str) -> None:
        """A DNS list listed a client or domain."""

    def policy(self, service: str, result: str, seconds: float) -> None:
        """A policy request ended: `ok` (an action came back) or `error`."""

    def policyd(self, action: str, seconds: float) -> None:
        """mailgate policyd answered a request with `action`."""

    def auto_block_event(self, event: str) -> None:
        """A bad event was counted towards automatic blocks (autoblock/events.py)."""

    def auto_block(self, target: str) -> None:
        """An automatic block was placed on an `address` or a `network`."""

    def auto_block_refusal(self) -> None:
        """A connection was refused because its client or network is blocked."""

    def state_backend(self, up: bool) -> None:
        """The shared state backend (Redis) answers again (`up`), or stopped answering."""


NO_METRICS = Metrics()


def create(enabled: bool) -> Metrics:
    """A worker's Metrics: Prometheus families with metrics_listen, else the no-op base
    (prometheus-client is imported only then: its value class depends on the environment
    the master prepared)."""
    if not enabled:
        return NO_METRICS
    from mailgate.metrics.prom import PrometheusMetrics

    return PrometheusMetrics()
