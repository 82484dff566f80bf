"""Chooses the transport and next hop for each recipient (Postfix trivial-rewrite + qmgr):
transport_maps first, then the address class (local, virtual, relay_domains, other) with
local_transport, virtual_transport, relay_transport, default_transport and relayhost."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mailgate.addressing import AddressClass, AddressResolver, find_address, strip_extension
from mailgate.config.config import Config
from mailgate.errors import MapError
from mailgate.maps.base import Map, Registry


@dataclass(frozen=True, slots=True)
class Transports:
    """The transport parameters, `transport:nexthop` each (nexthop may be empty)."""

    transport_maps: Map | None = None
    local: str = "local"
    virtual: str = "virtual"
    relay: str = "relay"
    default: str = "smtp"
    relayhost: str = ""

    @classmethod
    def from_config(cls, cfg: Config, registry: Registry) -> Transports:
        return cls(transport_maps=registry.open_list(cfg.get_list("transport_maps")),
                   local=cfg.get_str("local_transport"),
                   virtual=cfg.get_str("virtual_transport"),
                   relay=cfg.get_str("relay_transport"),
                   default=cfg.get_str("default_transport"), relayhost=cfg.get_str("relayhost"))


@dataclass(frozen=True, slots=True)
class Route:
    transport: str  # virtual, local (Maildir), smtp, relay, lmtp, discard, error, retry
    nexthop: str  # a Maildir path for virtual/local; a host or socket; error/discard text
    error: str = ""  # a reason to defer (temporary) instead of delivering
    uid: int = -1  # owner of delivered files (virtual_uid_maps); -1 keeps the server's
    gid: int = -1


@dataclass(frozen=True)
class Router:
    resolver: AddressResolver
    virtual_mailbox_maps: Map | None
    virtual_mailbox_base: str
    home_mailbox: str
    recipient_delimiter: str
    uid_maps: Map | None = None
    gid_maps: Map | None = None
    transports: Transports = Transports()

    def route(self, recipient: str) -> Route:
        try:
            resolved = self.resolver.resolve(recipient)
            chosen = self._transport_map(resolved.address, resolved.domain)
        except MapError as exc:
            return Route("none", "", f"table lookup failure: {exc}")
        t = self.transports
        default = {AddressClass.LOCAL: t.local, AddressClass.VIRTUAL: t.virtual,
                   AddressClass.RELAY: t.relay}.get(resolved.cls, t.default)
        transport, _, nexthop = default.partition(":")
        if resolved.cls in (AddressClass.RELAY, AddressClass.DEFAULT) and not nexthop:
            nexthop = t.relayhost or resolved.domain
        if chosen is not None:
            map_transport, _, map_nexthop = chosen.partition(":")
            transport = map_transport or transport
            nexthop = map_nexthop or (resolved.domain if map_transport else nexthop)
        if transport == "virtual":
            try:
                return self._virtual(resolved.address)
            except MapError as exc:
                return Route("none", "", f"table lookup failure: {exc}")
        if transport == "local":
            user = strip_extension(resolved.localpart, self.recipient_delimiter).lower()
            safe = _safe_name(user)
            if not safe:
                return Route("local", "", f"unusable local part: {resolved.localpart}")
            return Route("local", str(Path(self.virtual_mailbox_base) / safe / self.home_mailbox))
        return Route(transport, nexthop)

    def _transport_map(self, address: str, domain: str) -> str | None:
        """transport(5): the address, the domain, then `.parent` domains."""
        table = self.transports.transport_maps
        if table is None:
            return None
        keys = [address.lower(), domain.lower()] if domain else [address.lower()]
        name = domain.lower()
        while "." in name:
            name = name.split(".", 1)[1]
            keys.append("." + name)
        for key in keys:
            value = table.lookup(key)
            if value is not None:
                return value.strip()
        return None

    def _virtual(self, address: str) -> Route:
        if self.virtual_mailbox_maps is None:
            return Route("virtual", "", "virtual_mailbox_maps is empty")
        value = find_address(self.virtual_mailbox_maps, address, self.recipient_delimiter,
                             local=False)
        if value is None:
            return Route("virtual", "", "unknown user: " + address)
        if not value.endswith("/"):
            return Route("virtual", "", f"mailbox {value}: only Maildir (a path ending in '/') "
                                        "is supported")
        if value.startswith("/") or ".." in value.split("/"):
            return Route("virtual", "", f"mailbox {value}: not a relative path under "
                                        "virtual_mailbox_base")
        uid = self._id(self.uid_maps, address)
        gid = self._id(self.gid_maps, address)
        if uid is None or gid is None:
            return Route("virtual", "", f"recipient {address}: bad virtual_uid_maps or "
                                        "virtual_gid_maps result")
        return Route("virtual", os.path.normpath(os.path.join(self.virtual_mailbox_base, value)),
                     uid=uid, gid=gid)

    def _id(self, table: Map | None, address: str) -> int | None:
        if table is None:
            return -1
        value = find_address(table, address, self.recipient_delimiter, local=False)
        if value is None or not value.isdigit():
            return None
        return int(value)


def _safe_name(user: str) -> str:
    """A local part as one safe path component (no '/', no leading '.')."""
    if not user or user.startswith(".") or "/" in user or "\0" in user:
        return ""
    return user
