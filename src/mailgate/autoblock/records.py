"""What automatic blocks keep in the state store: key names, blocked targets, block values.

Keys (decision 0064; issue 23 stores each under a hash tag of its own, `PREFIX{key}`):

    badev:ADDRESS | badev:NETWORK      bad events in the current window (a fixed-window counter)
    block:ADDRESS | block:NETWORK      a block: `UNTIL OFFENCE SOURCE REASON`, expiring at UNTIL
    offences:ADDRESS | offences:NETWORK  how many automatic blocks the target had lately

ADDRESS is the client address as smtpd logs it (`192.0.2.7`, `2001:db8::7`); NETWORK is its
auto_block_ipv4_prefix_length / auto_block_ipv6_prefix_length network (`192.0.2.0/24`,
`2001:db8::/64`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

EVENTS = "badev:"
BLOCK = "block:"
OFFENCES = "offences:"
AUTO = "auto"  # a block's source: placed by a worker past the threshold
MANUAL = "manual"  # ... or by `mailgate block add`


def network(addr: str, ipv4_prefix: int, ipv6_prefix: int) -> str | None:
    """The client network counted and blocked with `addr` (`192.0.2.0/24`); None when the
    prefix length is the whole address (only addresses are counted then) or `addr` is not
    an IP address (`unknown`)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix >= ip.max_prefixlen:
        return None
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def target(text: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """An administrator's ADDRESS or NETWORK as the key names it (`192.0.2.7`,
    `192.0.2.0/24`, `2001:db8::/64`). Raises ValueError for anything else, and for a network
    whose length is not the configured one (the server looks up only those)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # Postfix's [2001:db8::]/64 notation
        text = text[1:].replace("]", "", 1)
    if "/" not in text:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"{text}: not an IP address or network") from None
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text}: not an IP address or network") from None
    prefix = ipv4_prefix if net.version == 4 else ipv6_prefix
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    if net.prefixlen != prefix:
        name = "auto_block_ipv4_prefix_length" if net.version == 4 else \
            "auto_block_ipv6_prefix_length"
        raise ValueError(f"{text}: only addresses and /{prefix} networks ({name}) are "
                         "looked up; use a cidr: table in smtpd_client_restrictions for others")
    return str(net)


def duration(offence: int, first: float, maximum: float) -> float:
    """How long the `offence`-th block lasts: auto_block_time, doubled for each earlier
    offence, at most auto_block_max_time."""
    doublings = min(max(offence - 1, 0), 64)
    return min(first * 2.0 ** doublings, max(maximum, first))


@dataclass(frozen=True, slots=True)
class Block:
    """One block as stored: until when (the store's clock), which offence, who placed it."""

    target: str
    until: float
    offence: int  # 1 for a first automatic block; 0 for a manual one
    source: str  # AUTO or MANUAL
    reason: str

    def value(self) -> str:
        return f"{self.until:.3f} {self.offence} {self.source} {self.reason}"

    @classmethod
    def parse(cls, target: str, value: str) -> Block | None:
        """The block a stored value describes; None for a value this version cannot read."""
        parts = value.split(" ", 3)
        try:
            return cls(target, float(parts[0]), int(parts[1]), parts[2],
                       parts[3] if len(parts) > 3 else "")
        except (ValueError, IndexError):
            return None
