"""What happens when a client connects: its name lookup (as smtpd_peer.c), and the DNS list
queries for its address started at once, in parallel, so they are answered by RCPT time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailgate.dns.names import NameService, peer_name
from mailgate.dns.rbl import reverse_query
from mailgate.dns.resolver import Resolver
from mailgate.engine.context import NAME_PERM, Client
from mailgate.engine.settings import EngineSettings

_ADDRESS_LISTS = frozenset({"reject_rbl_client", "reject_rbl", "permit_dnswl_client"})
_NAME_LISTS = frozenset({"reject_rhsbl_client", "permit_rhswl_client"})


@dataclass(frozen=True)
class Prefetch:
    """The list domains asked about a client's address, and about its name."""

    by_address: tuple[str, ...] = ()
    by_name: tuple[str, ...] = ()

    @classmethod
    def plan(cls, settings: EngineSettings) -> Prefetch:
        by_address: list[str] = []
        by_name: list[str] = []
        for names in (*settings.lists.values(), *settings.classes.values()):
            lowered = [n.lower() for n in names]
            for i, name in enumerate(lowered):
                arg = names[i + 1].partition("=")[0] if i + 1 < len(names) else ""
                if name in _ADDRESS_LISTS and arg:
                    by_address.append(arg)
                elif name in _NAME_LISTS and arg:
                    by_name.append(arg)
                elif name == "reject_maps_rbl":
                    by_address.extend(d.partition("=")[0] for d in settings.maps_rbl_domains)
                elif name == "reject_dnsbl_score":
                    by_address.extend(site.domain for site in settings.dnsbl_sites)
        return cls(tuple(dict.fromkeys(by_address)), tuple(dict.fromkeys(by_name)))

    def start_address(self, resolver: Resolver, addr: str) -> None:
        key = reverse_query(addr)
        if key is not None:
            for domain in self.by_address:
                resolver.prefetch(f"{key}.{domain}", "A")

    def start_name(self, resolver: Resolver, client: Client) -> None:
        name = client.name
        if name.lower() != "unknown" and not name.rpartition(".")[2].isdigit():
            for domain in self.by_name:
                resolver.prefetch(f"{name}.{domain}", "A")


async def lookup_client(names: NameService | None, addr: str, port: int, enabled: bool,
                        warn: Callable[[str], None]) -> Client:
    """The Client as smtpd sees it after smtpd_peer_init(): verified name or `unknown`."""
    if not enabled or names is None or reverse_query(addr) is None:
        return Client("unknown", addr, port, "unknown", NAME_PERM, NAME_PERM)
    found = await peer_name(names, addr, warn)
    return Client(found.name, addr, port, found.reverse_name, found.name_status,
                  found.reverse_status)
