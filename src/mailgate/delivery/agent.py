"""The delivery agent interface: `deliver(request) -> DeliveryResult`, one per transport."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Status(enum.Enum):
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One recipient of one queued message, routed to a transport and next hop."""

    queue_id: str
    sender: str
    recipient: str
    original_recipient: str
    index: int  # the recipient's position in the queue file (for idempotent file names)
    arrival: float
    content: bytes
    nexthop: str  # transport-specific: a Maildir path for maildir agents
    recovered: bool  # the message was found in the queue at start-up (may be half done)
    uid: int = -1  # owner for delivered files (-1: unchanged)
    gid: int = -1


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: Status
    dsn: str
    text: str  # e.g. "delivered to maildir"
    relay: str  # e.g. "virtual", "local", "host[addr]:port"
    setup: float = 0.0  # seconds of connection set-up (DNS, connect, greeting, EHLO, TLS)


class Agent(Protocol):
    """A delivery agent. `deliver` is blocking-free from the caller's view (async)."""

    name: str

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult: ...
