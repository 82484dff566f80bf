"""mailgate's Prometheus families, in prometheus-client's multi-process mode (one file per worker)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from mailgate.metrics import VERBS, Metrics

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusMetrics(Metrics):
    """The families of docs/operations.md. Label children are cached: one dict lookup and
    one shared-memory write per event."""

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
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def connection(self, delta: int) -> None:
        if delta > 0:
            self.connections.inc()
        self.sessions.inc(delta)

    def tarpit(self, delta: int, seconds: float = 0.0) -> None:
        self.tarpitted.inc(delta)
        if seconds:
            self.tarpit_seconds.inc(seconds)

    def command(self, verb: str) -> None:
        self._child(self.commands, verb if verb in VERBS else "other").inc()

    def reply(self, code: int) -> None:
        self._child(self.replies, str(code)).inc()

    def reject(self, stage: str, restriction: str, table: str, warn_only: bool) -> None:
        self._child(self.warnings if warn_only else self.rejects,
                    stage, restriction, table).inc()

    def message(self, result: str) -> None:
        self._child(self.messages, result).inc()

    def delivery(self, transport: str, result: str) -> None:
        self._child(self.deliveries, transport, result).inc()

    def dns(self, rdtype: str, result: str, seconds: float) -> None:
        self._child(self.lookups, rdtype, result).inc()
        self._child(self.lookup_seconds, rdtype).observe(seconds)

    def dnsbl_hit(self, domain: str) -> None:
        self._child(self.hits, domain).inc()

    def policy(self, service: str, result: str, seconds: float) -> None:
        self._child(self.requests, service, result).inc()
        self._child(self.request_seconds, service).observe(seconds)
