"""What a restriction sees: the client, the transaction and the resolver it may use."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailgate.addressing import AddressResolver
from mailgate.maps.base import Map
from mailgate.maps.matchlist import HostAddrList


@dataclass
class Client:
    name: str
    addr: str
    port: int
    helo: str = ""
    protocol: str = "SMTP"

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.addr}]"


@dataclass(frozen=True)
class EngineTables:
    """Tables and lists the built-in restrictions consult (opened once at start-up)."""

    resolver: AddressResolver
    mynetworks: HostAddrList
    local_recipient_maps: Map | None
    virtual_mailbox_maps: Map | None
    virtual_alias_maps: Map | None
    relay_recipient_maps: Map | None
    recipient_delimiter: str = ""


@dataclass
class Request:
    """One restriction evaluation: the stage's reply name and class, and the envelope so far."""

    client: Client
    sender: str | None
    recipient: str = ""
    stage: str = "RCPT"
    warnings: list[str] = field(default_factory=list)
