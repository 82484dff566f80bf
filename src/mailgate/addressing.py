"""Address resolution as Postfix's trivial-rewrite does it: canonical form and address class."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, replace

from mailgate.maps.addr_find import DEFAULT, find, split_extension
from mailgate.maps.base import Map
from mailgate.maps.casefold import fold
from mailgate.maps.matchlist import DomainList
from mailgate.smtp.hostnames import truncate_dot, valid_domain


class AddressClass(enum.Enum):
    LOCAL = "local"  # mydestination, inet_interfaces, proxy_interfaces
    ALIAS = "alias"  # virtual_alias_domains
    VIRTUAL = "virtual"  # virtual_mailbox_domains
    RELAY = "relay"  # relay_domains
    DEFAULT = "default"  # anything else

    @property
    def final(self) -> bool:
        return self in (AddressClass.LOCAL, AddressClass.ALIAS, AddressClass.VIRTUAL)


@dataclass(frozen=True, slots=True)
class Resolved:
    address: str  # internal form, domain lower-cased, no trailing dot
    localpart: str
    domain: str
    cls: AddressClass
    routed: bool  # the client asked for routing (user@x@us, user%x@us, x!user@us)
    error: bool = False  # the domain is no host name or address literal (user@, a@b%c)


@dataclass(frozen=True)
class AddressResolver:
    """Classifies recipient domains; built once from settings and handed to smtpd and qmgr."""

    myorigin: str
    mydestination: DomainList
    virtual_alias_domains: DomainList
    virtual_mailbox_domains: DomainList
    relay_domains: DomainList
    interface_addresses: frozenset[str]
    allow_percent_hack: bool = True
    swap_bangpath: bool = True
    append_at_myorigin: bool = True

    def domain_class(self, domain: str) -> AddressClass:
        """The class of a domain; raises MapError when a table lookup fails."""
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            try:
                addr = str(ipaddress.ip_address(literal))
            except ValueError:
                return AddressClass.DEFAULT
            return AddressClass.LOCAL if addr in self.interface_addresses else AddressClass.DEFAULT
        if self.mydestination.match(domain):
            return AddressClass.LOCAL
        if self.virtual_alias_domains.match(domain):
            return AddressClass.ALIAS
        if self.virtual_mailbox_domains.match(domain):
            return AddressClass.VIRTUAL
        if self.relay_domains.match(domain):
            return AddressClass.RELAY
        return AddressClass.DEFAULT

    def resolve(self, address: str) -> Resolved:
        """Canonicalize and classify `address` (internal form); raises MapError on table failure."""
        if address.startswith("@"):  # trivial-rewrite strips a source route: @a,@b:user@dom
            colon = address.find(":")
            if 0 < colon < len(address) - 1:
                address = address[colon + 1:]
        localpart, at, domain = address.rpartition("@")
        if not at:
            localpart, domain = address, (self.myorigin if self.append_at_myorigin else "")
        domain = truncate_dot(domain).lower()  # one dot, not from `..` (then malformed)
        for _ in range(20):
            cls = self.domain_class(domain) if domain else AddressClass.LOCAL
            if cls is not AddressClass.LOCAL:
                break
            if "@" in localpart:
                localpart, _, domain = localpart.rpartition("@")
            elif self.allow_percent_hack and "%" in localpart:
                localpart, _, domain = localpart.rpartition("%")
            elif self.swap_bangpath and "!" in localpart:
                domain, _, localpart = localpart.partition("!")
            else:
                break
            domain = truncate_dot(domain).lower()
        else:
            cls = AddressClass.DEFAULT
        full = f"{localpart}@{domain}" if domain else localpart
        # Routing operators left in the local part (resolve_dequoted: also inside quotes)
        # make the destination uncertain, whatever the domain (no relay through tricks).
        # Operators already resolved through our own domains do not (Postfix 3.7 accepts
        # alice%example.test@ourhost for a final example.test).
        routed = any(op in localpart for op in "@%!")
        error = bool(at) and not valid_domain(domain)
        return Resolved(full, localpart, domain, cls, routed, error)


def smtpd_resolve(resolver: AddressResolver, address: str, utf8: bool) -> Resolved:
    """smtpd_resolve_addr(): the resolved recipient case-folded as a whole (local part too,
    quoted parts too), with ICU case folding when smtputf8_enable is on (`Straße` → `strasse`),
    else A-Z only. smtpd's checks see this form: table keys, the domain that DNS checks
    look up, the "non-ASCII domain needs SMTPUTF8" test. Delivery uses `resolve` as it is.

    Raises MapError on table failure.
    """
    return fold_resolved(resolver.resolve(address), utf8)


def fold_resolved(found: Resolved, utf8: bool) -> Resolved:
    """A resolved address case-folded as a whole, as smtpd_resolve_addr() returns it."""
    folded = fold(found.address, utf8)
    if folded == found.address:
        return found
    localpart, at, domain = folded.rpartition("@")
    if not at:
        localpart, domain = folded, ""
    return replace(found, address=folded, localpart=localpart, domain=domain)


def strip_extension(localpart: str, delimiters: str) -> str:
    """`user+ext` → `user` for each delimiter in recipient_delimiter (Postfix 2.11+: a set)."""
    if localpart.lower() in ("postmaster", "mailer-daemon"):
        return localpart
    return split_extension(localpart, delimiters)[0]


def find_address(table: Map, address: str, delimiters: str, local: bool) -> str | None:
    """Look up a recipient as Postfix does for recipient tables (mail_addr_find): the address,
    without extension, the bare local part for local domains, then `@domain`.

    Raises MapError on a table failure.
    """
    strategy = DEFAULT if local else _NOT_LOCAL
    value, _ = find(table, address, strategy, "external-first", delimiters,
                    is_local=lambda domain: local)
    return value


_NOT_LOCAL = frozenset({"full", "noext", "at_domain"})
