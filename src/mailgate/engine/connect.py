"""What happens when a client connects: its name lookup (as smtpd_peer.c), and the DNS list
queries for its address started at once, in parallel, so they are answered by RCPT time;
likewise the HELO name's and the sender domain's queries when HELO and MAIL arrive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailgate.dns.lookup import lookup_name_ok
from mailgate.dns.names import NameService, family
from mailgate.dns.rbl import reverse_query
from mailgate.dns.resolver import Resolver
from mailgate.engine.context import NAME_FORGED, NAME_OK, NAME_PERM, NAME_TEMP, Client
from mailgate.engine.settings import EngineSettings
from mailgate.smtp.hostnames import address_value, valid_hostaddr, valid_hostname

_ADDRESS_LISTS = frozenset({"reject_rbl_client", "reject_rbl", "permit_dnswl_client"})
_NAME_LISTS = frozenset({"reject_rhsbl_client", "permit_rhswl_client"})
_HELO_LISTS = frozenset({"reject_rhsbl_helo"})
_SENDER_LISTS = frozenset({"reject_rhsbl_sender"})


@dataclass(frozen=True)
class Prefetch:
    """The list domains asked about a client's address, and about its name."""

    by_address: tuple[str, ...] = ()
    by_name: tuple[str, ...] = ()
    by_helo: tuple[str, ...] = ()
    by_sender: tuple[str, ...] = ()
    helo_host: bool = False  # reject_unknown_helo_hostname is used somewhere
    sender_domain: bool = False  # reject_unknown_sender_domain is used somewhere

    @classmethod
    def plan(cls, settings: EngineSettings) -> Prefetch:
        found: dict[str, list[str]] = {"address": [], "name": [], "helo": [], "sender": []}
        used: set[str] = set()
        for names in (*settings.lists.values(), *settings.classes.values()):
            lowered = [n.lower() for n in names]
            used.update(lowered)
            for i, name in enumerate(lowered):
                arg = names[i + 1].partition("=")[0] if i + 1 < len(names) else ""
                for kind, group in (("address", _ADDRESS_LISTS), ("name", _NAME_LISTS),
                                    ("helo", _HELO_LISTS), ("sender", _SENDER_LISTS)):
                    if name in group and arg:
                        found[kind].append(arg)
                if name == "reject_maps_rbl":
                    found["address"] += [d.partition("=")[0] for d in settings.maps_rbl_domains]
                elif name == "reject_dnsbl_score":
                    found["address"] += [site.domain for site in settings.dnsbl_sites]
        unique = {k: tuple(dict.fromkeys(v)) for k, v in found.items()}
        return cls(unique["address"], unique["name"], unique["helo"], unique["sender"],
                   helo_host=bool(used & {"reject_unknown_helo_hostname",
                                          "reject_unknown_hostname"}),
                   sender_domain=bool(used & {"reject_unknown_sender_domain",
                                              "reject_unknown_address"}))

    def start_address(self, resolver: Resolver, addr: str) -> None:
        key = reverse_query(addr)
        if key is not None:
            for domain in self.by_address:
                resolver.prefetch(f"{key}.{domain}", "A")

    def start_name(self, resolver: Resolver, client: Client) -> None:
        if client.name.lower() != "unknown":
            _lists(resolver, client.name, self.by_name)

    def start_helo(self, resolver: Resolver, helo: str) -> None:
        if self.helo_host and lookup_name_ok(helo):
            resolver.prefetch(helo, "A")
        _lists(resolver, helo, self.by_helo)

    def start_sender(self, resolver: Resolver, sender: str) -> None:
        if not (self.sender_domain or self.by_sender) or "@" not in sender:
            return
        domain = sender.rpartition("@")[2]
        if not domain or domain.startswith("["):
            return
        if self.sender_domain and lookup_name_ok(domain):
            resolver.prefetch(domain, "MX")
        _lists(resolver, domain, self.by_sender)


def _lists(resolver: Resolver, name: str, lists: tuple[str, ...]) -> None:
    """RHS list queries for a name (none for numeric last labels or names that are not valid
    host names, as find_dnsxl_domain())."""
    if lists and lookup_name_ok(name) and not name.rpartition(".")[2].isdigit():
        for domain in lists:
            resolver.prefetch(f"{name}.{domain}", "A")


async def lookup_client(names: NameService | None, addr: str, port: int, enabled: bool,
                        warn: Callable[[str], None]) -> Client:
    """smtpd_peer_sockaddr_to_hostname(): the PTR name, kept only if it resolves back to the
    client address (forward-confirmed); else `unknown` with Postfix's status and warning.
    The unverified PTR name stays the reverse name."""
    if not enabled or names is None or reverse_query(addr) is None:
        return Client("unknown", addr, port, "unknown", NAME_PERM, NAME_PERM)
    found = await names.hostname(addr)
    if found.error:
        status = NAME_TEMP if found.temporary else NAME_PERM
        return Client("unknown", addr, port, "unknown", status, status)
    name = found.values[0]
    if valid_hostaddr(name):
        warn(f"numeric hostname: {name}")
        return Client("unknown", addr, port, "unknown", NAME_PERM, NAME_PERM)
    if not valid_hostname(name):
        return Client("unknown", addr, port, "unknown", NAME_PERM, NAME_PERM)
    forward = await names.addresses(name, (family(addr),))
    if forward.error:
        warn(f"hostname {name} does not resolve to address {addr}: {forward.error}")
        return Client("unknown", addr, port, name,
                      NAME_TEMP if forward.temporary else NAME_FORGED, NAME_OK)
    client = address_value(addr)
    for value in forward.values:
        if address_value(value) == client:
            return Client(name, addr, port, name, NAME_OK, NAME_OK)
    warn(f"hostname {name} does not resolve to address {addr}")
    return Client("unknown", addr, port, name, NAME_FORGED, NAME_OK)
