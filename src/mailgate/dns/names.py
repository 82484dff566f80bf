"""Host names and addresses as the C library's getaddrinfo()/getnameinfo() give them to Postfix
(the hosts file, then the DNS; glibc's error texts)."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from mailgate.dns.resolver import OK, RETRY, Resolver
from mailgate.smtp.hostnames import valid_hostaddr

# gai_strerror() texts (glibc)
EAI_NONAME = "Name or service not known"
EAI_AGAIN = "Temporary failure in name resolution"
EAI_NODATA = "No address associated with hostname"


def domain_to_ascii(domain: str) -> str | None:
    """midna_domain_to_ascii(): a non-ASCII domain in its A-label (xn--) form, lower case;
    None when it cannot be converted."""
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


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


def family(addr: str) -> str:
    """The record type of an address: A or AAAA."""
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
        labels = (name[:-1] if name.endswith(".") else name).split(".")
        if any(not label or len(label) > 63 for label in labels):
            return Lookup(error=EAI_NONAME)  # the resolver cannot even ask (res_mkquery)
        known = self.hosts.names.get(name.lower().rstrip("."))
        if known:
            found = tuple(a for a in known if family(a) in families)
            if found:
                return Lookup(found)
        answers = await asyncio.gather(*(self.resolver.query(name, t) for t in families))
        values = tuple(r.data for answer in answers if answer.status == OK
                       for r in answer.records)
        if values:
            return Lookup(values)
        if any(answer.status == RETRY for answer in answers):
            return Lookup(error=EAI_AGAIN, temporary=True)
        return Lookup(error=EAI_NONAME if all(a.nxdomain for a in answers) else EAI_NODATA)

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
