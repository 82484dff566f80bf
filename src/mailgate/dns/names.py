"""Host names and addresses as the C library's getaddrinfo()/getnameinfo() give them to Postfix
(the hosts file, then the DNS; glibc's error texts)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from mailgate.dns.resolver import OK, RETRY, Resolver
from mailgate.smtp.hostnames import valid_hostaddr

# gai_strerror() texts (glibc)
EAI_NONAME = "Name or service not known"
EAI_AGAIN = "Temporary failure in name resolution"
EAI_NODATA = "No address associated with hostname"


_HNOK_LABEL = re.compile(r"[A-Za-z0-9_-]+")


def _pton_labels(name: str) -> list[str] | None:
    """ns_name_pton(): the labels of a presentation-form name (`\\X` and `\\DDD` escapes);
    None when a label is empty or over 63 octets, or the name empty or over 255."""
    if name == ".":
        return []  # the root
    labels, label, i, n = [], [], 0, len(name)
    while i < n:
        ch = name[i]
        if ch == "\\":
            if name[i + 1:i + 4].isdigit() and len(name[i + 1:i + 4]) == 3:
                label.append(chr(int(name[i + 1:i + 4]) & 0xFF))
                i += 4
                continue
            if i + 1 >= n:
                return None
            label.append(name[i + 1])
            i += 2
            continue
        if ch == ".":
            if not label:
                return None
            labels.append("".join(label))
            label = []
        else:
            label.append(ch)
        i += 1
    if label:
        labels.append("".join(label))
    if not labels or any(len(x) > 63 for x in labels) or sum(len(x) + 1 for x in labels) >= 255:
        return None
    return labels


def res_hnok(name: str) -> bool:
    """glibc res_hnok(), which getaddrinfo() applies before it asks the DNS: printable ASCII
    without spaces, labels of letters, digits, `-` and `_`, the first not starting with `-`
    (so a non-ASCII name is never looked up: EAI_NONAME)."""
    if not all("!" <= ch <= "~" for ch in name):
        return False
    labels = _pton_labels(name)
    if labels is None or (labels and labels[0].startswith("-")):
        return False
    return all(_HNOK_LABEL.fullmatch(label) for label in labels)


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
        known = self.hosts.names.get(name.lower().rstrip("."))
        if known:
            found = tuple(a for a in known if family(a) in families)
            if found:
                return Lookup(found)
        if not res_hnok(name):
            return Lookup(error=EAI_NONAME)  # nss_dns does not even ask
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
