"""Chooses the transport and next hop for each recipient (Postfix trivial-rewrite + qmgr)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailgate.addressing import AddressClass, AddressResolver, find_address, strip_extension
from mailgate.errors import MapError
from mailgate.maps.base import Map


@dataclass(frozen=True, slots=True)
class Route:
    transport: str  # "virtual", "local", or a transport this server cannot deliver to yet
    nexthop: str  # a Maildir path for virtual/local
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

    def route(self, recipient: str) -> Route:
        try:
            resolved = self.resolver.resolve(recipient)
            if resolved.cls is AddressClass.VIRTUAL:
                return self._virtual(resolved.address)
        except MapError as exc:
            return Route("none", "", f"table lookup failure: {exc}")
        if resolved.cls is AddressClass.LOCAL:
            user = strip_extension(resolved.localpart, self.recipient_delimiter).lower()
            safe = _safe_name(user)
            if not safe:
                return Route("local", "", f"unusable local part: {resolved.localpart}")
            return Route("local", str(Path(self.virtual_mailbox_base) / safe / self.home_mailbox))
        return Route("none", "", f"delivery to {resolved.domain or 'this address'} needs the "
                                 "smtp transport, which this server does not provide yet")

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
        parts = Path(value).parts
        if Path(value).is_absolute() or ".." in parts:
            return Route("virtual", "", f"mailbox {value}: not a relative path under "
                                        "virtual_mailbox_base")
        uid = self._id(self.uid_maps, address)
        gid = self._id(self.gid_maps, address)
        if uid is None or gid is None:
            return Route("virtual", "", f"recipient {address}: bad virtual_uid_maps or "
                                        "virtual_gid_maps result")
        return Route("virtual", str(Path(self.virtual_mailbox_base) / value), uid=uid, gid=gid)

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
