"""mailgate's Prometheus families, in prometheus-client's multi-process mode (one file per worker)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from mailgate.metrics import VERBS, Metrics

# access(5) actions policyd may answer (any other word is counted as "other").
ACTIONS = frozenset({"OK", "DUNNO", "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT",
                     "DISCARD", "HOLD", "REDIRECT", "FILTER", "BCC", "PREPEND", "WARN", "INFO",
                     "SLEEP", "PERMIT"})
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusMetrics(Metrics):
    """The families of docs/operations.md, counted in the worker and flushed to the shared
    files a few times a second (`start()` on the worker's loop)."""

    enabled = True

    def __init__(self) -> None:
        self.connections = Counter("mailgate_smtpd_connections", "SMTP connections accepted",
                                   registry=None)
        self.sessions = Gauge("mailgate_smtpd_sessions", "SMTP sessions in progress",
                              registry=None, multiprocess_mode="livesum")
        self.tarpitted = Gauge("mailgate_smtpd_tarpit_sessions",
                               "SMTP sessions waiting in the error tarpit now",
                               registry=None, multiprocess_mode="livesum")
        self.tarpit_seconds = Counter("mailgate_smtpd_tarpit_delay_seconds",
                                      "Time replies were delayed by the error tarpit",
                                      registry=None)
        self.commands = Counter("mailgate_smtpd_commands", "SMTP commands received",
                                ["command"], registry=None)
        self.replies = Counter("mailgate_smtpd_replies", "SMTP replies sent by code",
                               ["code"], registry=None)
        self.rejects = Counter("mailgate_smtpd_rejects", "Restriction rejects",
                               ["stage", "restriction", "table"], registry=None)
        self.warnings = Counter("mailgate_smtpd_reject_warnings",
                                "Rejects logged but not made (warn_if_reject)",
                                ["stage", "restriction", "table"], registry=None)
        self.messages = Counter("mailgate_smtpd_messages", "Messages that got a 250 reply",
                                ["result"], registry=None)
        self.deliveries = Counter("mailgate_deliveries", "Delivery attempts by result",
                                  ["transport", "result"], registry=None)
        self.lookups = Counter("mailgate_dns_lookups", "DNS queries sent to a server",
                               ["type", "result"], registry=None)
        self.lookup_seconds = Histogram("mailgate_dns_lookup_duration_seconds",
                                        "DNS query latency", ["type"], buckets=LATENCY,
                                        registry=None)
        self.hits = Counter("mailgate_dnsbl_hits", "DNS list listings", ["list"],
                            registry=None)
        self.requests = Counter("mailgate_policy_requests", "Policy service requests",
                                ["service", "result"], registry=None)
        self.request_seconds = Histogram("mailgate_policy_request_duration_seconds",
                                         "Policy service latency", ["service"],
                                         buckets=LATENCY, registry=None)
        self.answers = Counter("mailgate_policyd_requests", "Policy requests answered by "
                               "mailgate policyd, by action", ["action"], registry=None)
        self.answer_seconds = Histogram("mailgate_policyd_request_duration_seconds",
                                        "mailgate policyd time to answer", buckets=LATENCY,
                                        registry=None)
        self.block_events = Counter("mailgate_auto_block_events", "Bad events counted "
                                    "towards automatic blocks", ["event"], registry=None)
        self.blocks = Counter("mailgate_auto_blocks", "Automatic blocks placed",
                              ["target"], registry=None)
        self.block_refusals = Counter("mailgate_auto_block_refusals", "Connections refused "
                                      "because the client is blocked", registry=None)
        self.state_up = Gauge("mailgate_state_backend_up", "1 while the shared state "
                              "backend (Redis) answers in every process, 0 while it fails "
                              "over to redis_failure_action", registry=None,
                              multiprocess_mode="livemin")
        self._state_up: int | None = None  # None: no shared backend (not exported)
        self._children: dict[tuple[Any, ...], Any] = {}
        # Events are added up in plain dicts and written to the shared files by flush()
        # (a few times a second): an event costs a dict update, not a locked mmap write.
        self._counts: dict[tuple[Any, ...], float] = {}
        self._observed: list[tuple[tuple[Any, ...], float]] = []
        self._sessions = 0
        self._tarpitted = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, interval: float = 0.2) -> None:
        """Flush every `interval` seconds on this event loop."""

        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(interval, tick)

        self._timer = loop.call_later(interval, tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()

    def flush(self) -> None:
        """Write what was counted since the last flush to the shared files."""
        counts, self._counts = self._counts, {}
        for key, n in counts.items():
            self._child(key).inc(n)
        observed, self._observed = self._observed, []
        for key, seconds in observed:
            self._child(key).observe(seconds)
        self.sessions.set(self._sessions)
        self.tarpitted.set(self._tarpitted)
        if self._state_up is not None:
            self.state_up.set(self._state_up)

    def _child(self, key: tuple[Any, ...]) -> Any:
        """The value for (family, *labels), made once: the family itself without labels."""
        child = self._children.get(key)
        if child is None:
            family, *labels = key
            child = self._children[key] = family.labels(*labels) if labels else family
        return child

    def _add(self, key: tuple[Any, ...], n: float = 1) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + n

    def connection(self, delta: int) -> None:
        if delta > 0:
            self._add((self.connections,))
        self._sessions += delta

    def tarpit(self, delta: int, seconds: float = 0.0) -> None:
        self._tarpitted += delta
        if seconds:
            self._add((self.tarpit_seconds,), seconds)

    def command(self, verb: str) -> None:
        self._add((self.commands, verb if verb in VERBS else "other"))

    def reply(self, code: int) -> None:
        self._add((self.replies, str(code)))

    def reject(self, stage: str, restriction: str, table: str, warn_only: bool) -> None:
        self._add((self.warnings if warn_only else self.rejects, stage, restriction, table))

    def message(self, result: str) -> None:
        self._add((self.messages, result))

    def delivery(self, transport: str, result: str) -> None:
        self._add((self.deliveries, transport, result))

    def dns(self, rdtype: str, result: str, seconds: float) -> None:
        self._add((self.lookups, rdtype, result))
        self._observed.append(((self.lookup_seconds, rdtype), seconds))

    def dnsbl_hit(self, domain: str) -> None:
        self._add((self.hits, domain))

    def policy(self, service: str, result: str, seconds: float) -> None:
        self._add((self.requests, service, result))
        self._observed.append(((self.request_seconds, service), seconds))

    def policyd(self, action: str, seconds: float) -> None:
        word = action.split(None, 1)[0].upper() if action.strip() else "DUNNO"
        if word[:1].isdigit():
            word = word[0] + "xx"  # a numeric reply: 4xx or 5xx, not its text
        elif word not in ACTIONS:
            word = "other"
        self._add((self.answers, word))
        self._observed.append(((self.answer_seconds,), seconds))

    def auto_block_event(self, event: str) -> None:
        self._add((self.block_events, event))

    def auto_block(self, target: str) -> None:
        self._add((self.blocks, target))

    def auto_block_refusal(self) -> None:
        self._add((self.block_refusals,))

    def state_backend(self, up: bool) -> None:
        self._state_up = int(up)
