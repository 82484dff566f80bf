"""The tables the restrictions consult, opened once and handed to the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailgate.addressing import AddressResolver
from mailgate.dns.idna import IdnaCache
from mailgate.dns.lookup import DnsLookup
from mailgate.dns.names import NameService
from mailgate.maps.base import Map, Registry
from mailgate.maps.matchlist import HostAddrList
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.policy.client import PolicyClient
from mailgate.state import MemoryStore, Store

if TYPE_CHECKING:
    from mailgate.engine.greylist import Greylist


@dataclass
class AccessTables:
    """`check_*_access` tables by the spec written in the restriction list (Postfix's
    map_command_table). Tables are opened at start-up; one that cannot be opened answers
    every lookup with an error, so its restriction replies 451 4.3.5."""

    registry: Registry
    tables: dict[str, Map] = field(default_factory=dict)

    def get(self, spec: str) -> Map:
        table = self.tables.get(spec)
        if table is None:
            table = self.registry.open_or_failed(spec)
            self.tables[spec] = table
        return table


@dataclass
class EngineTables:
    resolver: AddressResolver
    mynetworks: HostAddrList
    access: AccessTables
    local_recipient_maps: Map | None = None
    virtual_mailbox_maps: Map | None = None
    virtual_alias_maps: Map | None = None
    relay_recipient_maps: Map | None = None
    canonical_maps: Map | None = None
    sender_canonical_maps: Map | None = None
    recipient_canonical_maps: Map | None = None
    relay_clientcerts: Map | None = None
    sender_login_maps: Map | None = None  # smtpd_sender_login_maps
    inet_interfaces: frozenset[str] = frozenset()
    alias_unknown_text: str | None = None
    # smtpd_log_access_permit_actions: a match list (names, or tables such as static:all)
    log_permit: Callable[[str], bool] = lambda action: False
    # DNS: records (with smtpd_dns_reply_filter), host names as the C library sees them
    dns: DnsLookup | None = None
    names: NameService | None = None
    myhostname: str = ""
    mx_backup_networks: HostAddrList | None = None
    rbl_reply_maps: Map | None = None
    list_errors: dict[str, int] = field(default_factory=dict)  # DNS list domain -> count
    warned: set[str] = field(default_factory=set)  # once-per-process warnings given
    idna: IdnaCache = field(default_factory=IdnaCache)  # smtpd's midna_domain_to_ascii cache
    policy: dict[str, PolicyClient] = field(default_factory=dict)  # check_policy_service
    metrics: Metrics = NO_METRICS
    state: Store = field(default_factory=MemoryStore)  # greylisting, blocks (decision 0061)
    greylist: Greylist | None = None  # check_greylist's settings and allowlists (0063)
