"""Builds what a worker and the other commands need from a Config: tables, the restriction engine,
the address resolver, client and domain matchers, the queue committer."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
from collections.abc import Awaitable, Callable

from mailgate.addressing import AddressResolver
from mailgate.config.config import Config
from mailgate.dns.idna import IdnaCache
from mailgate.dns.lookup import DnsLookup
from mailgate.dns.names import HostsFile, NameService
from mailgate.dns.resolver import Resolver
from mailgate.engine.context import Client
from mailgate.engine.engine import Engine
from mailgate.engine.greylist import Greylist
from mailgate.engine.settings import LIST_PARAMS, EngineSettings
from mailgate.engine.tables import AccessTables, EngineTables
from mailgate.errors import ConfigError, MapError, QueueError
from mailgate.maps import Map, Registry
from mailgate.maps.matchlist import DomainList, HostAddrList
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.policy.client import clients as policy_clients
from mailgate.queue.durable import DurableRenamer
from mailgate.queue.store import Envelope, Incoming, QueueStore
from mailgate.state import MemoryStore, Store

# The embedded main.cf of `mailgate serve` without -c: a working local demo.
DEMO_MAIN_CF = """\
# mailgate's embedded demo configuration (used when no -c DIR is given)
mydestination = localhost, $myhostname
mynetworks = 127.0.0.0/8 [::1]/128
local_recipient_maps =
smtpd_listen = 127.0.0.1:2525
"""


def interface_addresses(cfg: Config, listen: list[str]) -> frozenset[str]:
    """Our own addresses: inet_interfaces (or, for `all`, the listen addresses and loopback)."""
    out: set[str] = set()
    for item in cfg.get_list("inet_interfaces") + cfg.get_list("proxy_interfaces"):
        if item in ("all", "loopback-only", "localhost"):
            out.update(("127.0.0.1", "::1"))
            continue
        try:
            out.add(str(ipaddress.ip_address(item.strip("[]"))))
        except ValueError:
            with contextlib.suppress(OSError):
                out.update(str(a[4][0]) for a in socket.getaddrinfo(item, None))
    for host in listen:
        with contextlib.suppress(ValueError):
            out.add(str(ipaddress.ip_address(host)))
    return frozenset(out)


def interface_networks() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The machine's interface addresses with their prefixes (from `ip -o addr show`)."""
    try:
        out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                             timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        words = line.split()
        for family in ("inet", "inet6"):
            if family in words[:4] and words.index(family) + 1 < len(words):
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.ip_interface(words[words.index(family) + 1]))
    return found


def mynetworks_patterns(cfg: Config) -> tuple[str, ...]:
    """`mynetworks`, or what `mynetworks_style` derives from the machine's interfaces:
    `host` their addresses, `subnet` their subnets, `class` their class A/B/C networks
    (loopback is always 127.0.0.0/8 and [::1]/128, as Postfix lists it)."""
    if cfg.is_set("mynetworks"):
        return cfg.get_list("mynetworks")
    style = cfg.get_str("mynetworks_style").lower()
    out = ["127.0.0.0/8", "[::1]/128"]
    for iface in interface_networks():
        if iface.ip.is_loopback or iface.ip.is_link_local:
            continue
        if style == "host":
            net = ipaddress.ip_network(f"{iface.ip}/{iface.ip.max_prefixlen}")
        elif style == "class" and iface.version == 4:
            first = int(str(iface.ip).split(".")[0])
            prefix = 8 if first < 128 else 16 if first < 192 else 24
            net = ipaddress.ip_network(f"{iface.ip}/{prefix}", strict=False)
        else:
            net = iface.network
        text = f"[{net.network_address}]/{net.prefixlen}" if net.version == 6 else str(net)
        if text not in out:
            out.append(text)
    return tuple(out)


def build_resolver(cfg: Config, registry: Registry, local: frozenset[str],
                   warn: Callable[[str], None] = lambda text: None) -> AddressResolver:
    """Domain classes from mydestination, virtual_*_domains and relay_domains."""
    pdms = set(cfg.get_list("parent_domain_matches_subdomains"))

    def domains(name: str) -> DomainList:
        return DomainList.build(cfg.get_list(name), registry, name in pdms, name, warn)

    return AddressResolver(
        myorigin=cfg.get_str("myorigin"), mydestination=domains("mydestination"),
        virtual_alias_domains=domains("virtual_alias_domains"),
        virtual_mailbox_domains=domains("virtual_mailbox_domains"),
        relay_domains=domains("relay_domains"), interface_addresses=local,
        allow_percent_hack=cfg.get_bool("allow_percent_hack"),
        swap_bangpath=cfg.get_bool("swap_bangpath"),
        append_at_myorigin=cfg.get_bool("append_at_myorigin"))


def restriction_lists(cfg: Config, policyd: bool = False) -> dict[str, tuple[str, ...]]:
    """Every restriction list by the parameter that sets it: the stage lists (`policyd`:
    policyd_restrictions) and the restriction classes (the policy clients name it in errors)."""
    params = ("policyd_restrictions",) if policyd else tuple(LIST_PARAMS.values())
    return {name: cfg.get_list(name)
            for name in (*params, *cfg.get_list("smtpd_restriction_classes"))}


def build_engine(cfg: Config, registry: Registry, resolver: AddressResolver,
                 log: Callable[[str], None], local: frozenset[str] = frozenset(),
                 policyd: bool = False, metrics: Metrics = NO_METRICS,
                 state: Store | None = None) -> tuple[Engine, Map | None]:
    """The restriction engine with its tables (`policyd`: for policyd_restrictions); also
    returns virtual_mailbox_maps. `state`: the client state the workers share (default:
    this process's memory)."""
    pdms = set(cfg.get_list("parent_domain_matches_subdomains"))
    settings = EngineSettings.from_config(cfg, policyd)
    mynetworks = HostAddrList.build(mynetworks_patterns(cfg), registry, "mynetworks",
                                    "mynetworks" in pdms,
                                    warn=log)

    def table(name: str) -> Map | None:
        return registry.open_list(cfg.get_list(name))

    vmaps = table("virtual_mailbox_maps")
    access = AccessTables(registry)
    every_list = (*settings.lists.values(), *settings.classes.values())
    policy = policy_clients(cfg, restriction_lists(cfg, policyd))
    for names in every_list:
        for name in names:  # open every access table at start-up, as Postfix does
            if ":" in name and name not in policy:
                access.get(name)
    try:
        dns_resolver = Resolver(cfg.get_list("resolver_servers"),
                                cfg.get_time("resolver_timeout"),
                                cfg.get_int("resolver_concurrency"),
                                cfg.get_int("resolver_cache_size"), observe=metrics.dns)
    except ValueError as exc:
        raise ConfigError(f"{cfg.origin('resolver_servers')}: {exc}") from exc
    protocols = set(cfg.get_list("inet_protocols"))
    families = ("A", "AAAA") if protocols & {"all", "ipv6"} else ("A",)
    if "ipv4" not in protocols and "all" not in protocols and "ipv6" in protocols:
        families = ("AAAA",)
    tables = EngineTables(
        dns=DnsLookup(dns_resolver, table("smtpd_dns_reply_filter"), log),
        names=NameService(dns_resolver, HostsFile.read(cfg.get_str("resolver_hosts_file")),
                          families),
        myhostname=cfg.get_str("myhostname"),
        mx_backup_networks=HostAddrList.build(cfg.get_list("permit_mx_backup_networks"),
                                              registry, "permit_mx_backup_networks",
                                              "permit_mx_backup_networks" in pdms, warn=log),
        rbl_reply_maps=table("rbl_reply_maps"),
        resolver=resolver, mynetworks=mynetworks, access=access,
        local_recipient_maps=table("local_recipient_maps"), virtual_mailbox_maps=vmaps,
        virtual_alias_maps=table("virtual_alias_maps"),
        relay_recipient_maps=table("relay_recipient_maps"),
        canonical_maps=table("canonical_maps"),
        sender_canonical_maps=table("sender_canonical_maps"),
        sender_login_maps=table("smtpd_sender_login_maps"),
        relay_clientcerts=table("relay_clientcerts"),
        recipient_canonical_maps=table("recipient_canonical_maps"),
        inet_interfaces=local, policy=policy,
        idna=IdnaCache(transitional=cfg.get_bool("enable_idna2003_compatibility")),
        log_permit=string_matcher(cfg.get_list("smtpd_log_access_permit_actions"), registry),
        metrics=metrics, state=state if state is not None else MemoryStore())
    tables.greylist = Greylist.from_config(cfg, tables.state,
                                           lambda text: log(f"warning: {text}"))
    return Engine(settings, tables, log), vmaps


def committer(store: QueueStore, renamer: DurableRenamer,
              fsync: bool) -> Callable[[Incoming, Envelope, bytes, str], Awaitable[None]]:
    """What smtpd awaits before `250`: write, then fsync + rename to active/ (or hold/) +
    fsync dir."""

    async def commit(incoming: Incoming, envelope: Envelope, text: bytes, queue: str) -> None:
        store.write(incoming, envelope, text)
        try:  # the descriptor stays the store's: it holds the queue file's lock
            await renamer.commit(incoming.fd, incoming.path,
                                 store.file(queue, incoming.queue_id), fsync, close=False)
        except OSError as exc:
            store.abort(incoming)
            raise QueueError(f"{incoming.queue_id}: cannot store message: "
                             f"{exc.strerror}") from exc
        if queue != "active":  # held: no queue manager owns it until `mailgate queue release`
            store.release(incoming.queue_id)

    return commit


def client_matcher(patterns: tuple[str, ...], registry: Registry) -> Callable[[Client], bool]:
    """A host/address list as a predicate on clients (a lookup failure means no match)."""
    networks = HostAddrList.build(patterns, registry)

    def match(client: Client) -> bool:
        try:
            return networks.match(client.name, client.addr)
        except MapError:
            return False

    return match


def client_pair_matcher(patterns: tuple[str, ...], registry: Registry
                        ) -> Callable[[str, str], bool]:
    """A client list (smtpd_sasl_exceptions_networks) matched on (address, name)."""
    if not patterns:
        return lambda addr, name: False
    hosts = HostAddrList.build(patterns, registry)

    def match(addr: str, name: str) -> bool:
        try:
            return hosts.match(name, addr)
        except MapError:  # AUTH stays announced
            return False

    return match


def string_matcher(items: tuple[str, ...], registry: Registry) -> Callable[[str], bool]:
    """A Postfix string list: words (case-insensitive) and tables such as `static:all`."""
    words = frozenset(i.lower() for i in items if ":" not in i)
    tables = [registry.open_or_failed(i) for i in items if ":" in i]

    def match(value: str) -> bool:
        if value.lower() in words:
            return True
        for table in tables:
            try:
                if table.lookup(value) is not None:
                    return True
            except MapError:
                return False
        return False

    return match


def domain_matcher(cfg: Config, name: str, registry: Registry) -> Callable[[str], bool]:
    """A domain list parameter as a predicate (a lookup failure means no match)."""
    domains = DomainList.build(cfg.get_list(name), registry,
                               name in cfg.get_list("parent_domain_matches_subdomains"), name)

    def match(domain: str) -> bool:
        try:
            return domains.match(domain)
        except MapError:
            return False

    return match
