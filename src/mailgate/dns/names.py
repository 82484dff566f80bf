"""Host names and addresses as the C library's getaddrinfo()/getnameinfo() give them to Postfix
(the hosts file, then the DNS; glibc's error texts), and smtpd's client name lookup."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailgate.dns.resolver import OK, RETRY, Resolver
from mailgate.smtp.hostnames import valid_hostaddr, valid_hostname

# gai_strerror() texts (glibc)
EAI_NONAME = "Name or service not known"
EAI_AGAIN = "Temporary failure in name resolution"
EAI_NODATA = "No address associated with hostname"

# smtpd's client name status (smtpd.h SMTPD_PEER_CODE_*), as in engine.context
NAME_OK, NAME_TEMP, NAME_PERM, NAME_FORGED = 2, 4, 5, 6


@dataclass(frozen=True)
class HostsFile:
    """/etc/hosts: addresses by lower-case name, and the first name of each address."""

    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    addrs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str) -> HostsFile:
        if not path:
            return cls()
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            return cls()
        names: dict[str, list[str]] = {}
        addrs: dict[str, str] = {}
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 2:
                continue
            try:
                addr = str(ipaddress.ip_address(words[0].split("%")[0]))
            except ValueError:
                continue
            addrs.setdefault(addr, words[1])
            for name in words[1:]:
                names.setdefault(name.lower(), []).append(addr)
        return cls({k: tuple(v) for k, v in names.items()}, addrs)


@dataclass(frozen=True, slots=True)
class Lookup:
    values: tuple[str, ...] = ()
    error: str = ""  # gai_strerror() text, "" when found
    temporary: bool = False


def _family(addr: str) -> str:
    return "AAAA" if ":" in addr else "A"


class NameService:
    """getaddrinfo() / getnameinfo(NI_NAMEREQD) over the hosts file and the resolver."""

    def __init__(self, resolver: Resolver, hosts: HostsFile | None = None,
                 families: tuple[str, ...] = ("A", "AAAA")) -> None:
        self.resolver = resolver
        self.hosts = hosts or HostsFile()
        self.families = families

    async def addresses(self, name: str, families: tuple[str, ...] | None = None) -> Lookup:
        families = families or self.families
        if valid_hostaddr(name):
            return Lookup((name,))
        known = self.hosts.names.get(name.lower().rstrip("."))
        if known:
            found = tuple(a for a in known if _family(a) in families)
            if found:
                return Lookup(found)
        values: list[str] = []
        temporary = False
        nxdomain = True
        for rdtype in families:
            answer = await self.resolver.query(name, rdtype)
            if answer.status == OK:
                values.extend(r.data for r in answer.records if r.type == rdtype)
            elif answer.status == RETRY:
                temporary = True
            if not answer.nxdomain:
                nxdomain = False
        if values:
            return Lookup(tuple(values))
        if temporary:
            return Lookup(error=EAI_AGAIN, temporary=True)
        return Lookup(error=EAI_NONAME if nxdomain else EAI_NODATA)

    async def hostname(self, addr: str) -> Lookup:
        known = self.hosts.addrs.get(addr)
        if known:
            return Lookup((known,))
        try:
            ptr = ipaddress.ip_address(addr).reverse_pointer
        except ValueError:
            return Lookup(error=EAI_NONAME)
        answer = await self.resolver.query(ptr, "PTR")
        if answer.status == OK:
            return Lookup((answer.records[0].data,))
        if answer.status == RETRY:
            return Lookup(error=EAI_AGAIN, temporary=True)
        return Lookup(error=EAI_NONAME)


@dataclass(frozen=True, slots=True)
class PeerName:
    name: str
    reverse_name: str
    name_status: int
    reverse_status: int


async def peer_name(names: NameService, addr: str, warn: Callable[[str], None]) -> PeerName:
    """smtpd_peer_sockaddr_to_hostname(): the PTR name, kept only if it resolves back to the
    client address (forward-confirmed); else `unknown` with Postfix's status and warning."""
    found = await names.hostname(addr)
    if found.error:
        status = NAME_TEMP if found.temporary else NAME_PERM
        return PeerName("unknown", "unknown", status, status)
    name = found.values[0]
    if valid_hostaddr(name):
        warn(f"numeric hostname: {name}")
        return PeerName("unknown", "unknown", NAME_PERM, NAME_PERM)
    if not valid_hostname(name):
        return PeerName("unknown", "unknown", NAME_PERM, NAME_PERM)
    forward = await names.addresses(name, (_family(addr),))
    if forward.error:
        warn(f"hostname {name} does not resolve to address {addr}: {forward.error}")
        return PeerName("unknown", name, NAME_TEMP if forward.temporary else NAME_FORGED,
                        NAME_OK)
    client = ipaddress.ip_address(addr)
    for value in forward.values:
        try:
            if ipaddress.ip_address(value) == client:
                return PeerName(name, name, NAME_OK, NAME_OK)
        except ValueError:
            continue
    warn(f"hostname {name} does not resolve to address {addr}")
    return PeerName("unknown", name, NAME_FORGED, NAME_OK)
