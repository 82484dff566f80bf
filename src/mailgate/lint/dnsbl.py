"""public-resolver-dnsbl: DNS lists that refuse queries from public resolvers, asked through one.

Such a list answers an error code (Spamhaus: 127.255.255.254) or nothing to a query that
arrives through Google's, Cloudflare's, Quad9's ... resolvers: it never lists a client, and
nothing says so but a list-error line (decision 0016). Only facts the operators publish are
listed here (docs/decisions/0060-lint.md)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from types import MappingProxyType

from mailgate.lint.findings import Finding, Where
from mailgate.lint.lists import DOMAIN_ARGUMENT, RestrictionList, Subject

# Resolvers anyone may use, by address: who runs them.
PUBLIC_RESOLVERS = MappingProxyType({
    **dict.fromkeys(("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"),
                    "Google Public DNS"),
    **dict.fromkeys(("1.1.1.1", "1.0.0.1", "1.1.1.2", "1.0.0.2", "1.1.1.3", "1.0.0.3",
                     "2606:4700:4700::1111", "2606:4700:4700::1001", "2606:4700:4700::1112",
                     "2606:4700:4700::1002", "2606:4700:4700::1113", "2606:4700:4700::1003"),
                    "Cloudflare"),
    **dict.fromkeys(("9.9.9.9", "149.112.112.112", "9.9.9.10", "149.112.112.10", "9.9.9.11",
                     "149.112.112.11", "2620:fe::fe", "2620:fe::9", "2620:fe::10",
                     "2620:fe::fe:10", "2620:fe::11", "2620:fe::fe:11"), "Quad9"),
    **dict.fromkeys(("208.67.222.222", "208.67.220.220", "208.67.222.123", "208.67.220.123",
                     "2620:119:35::35", "2620:119:53::53"), "OpenDNS"),
    **dict.fromkeys(("94.140.14.14", "94.140.15.15"), "AdGuard DNS"),
    **dict.fromkeys(("77.88.8.8", "77.88.8.1"), "Yandex DNS"),
})
# DNS list domains (and their subdomains) that refuse public resolvers, and how.
REFUSING_LISTS = MappingProxyType({
    "spamhaus.org": "Spamhaus answers 127.255.255.254 to queries through public resolvers",
    "uribl.com": "URIBL refuses queries through public resolvers (it answers 127.0.0.1)",
    "surbl.org": "SURBL refuses queries through large public resolvers",
    "b.barracudacentral.org": "Barracuda answers only resolvers whose addresses are "
                              "registered with it",
})


def resolvers(subject: Subject, resolv_conf: str) -> tuple[list[str], str]:
    """The DNS servers the server asks (resolver_servers, else resolv.conf's nameservers)
    and where that is said."""
    cfg = subject.cfg
    items = cfg.get_list("resolver_servers")
    if items:
        where = subject.where("resolver_servers")
        return [_host(item) for item in items], f"resolver_servers, {where.file}:{where.line}"
    try:
        with open(resolv_conf, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return [], resolv_conf
    hosts = [words[1].partition("%")[0] for words in (line.split() for line in lines)
             if len(words) > 1 and words[0] == "nameserver"]
    return hosts, resolv_conf


def _host(item: str) -> str:
    """`host`, `host:port`, `[ipv6]:port` or a bare IPv6 address → the address."""
    if item.startswith("["):
        return item[1:].partition("]")[0]
    if item.count(":") == 1:
        return item.partition(":")[0]
    return item


def public(host: str) -> str | None:
    """Who runs the public resolver at `host`, or None."""
    try:
        return PUBLIC_RESOLVERS.get(str(ipaddress.ip_address(host)))
    except ValueError:
        return None


def refusing(domain: str) -> str | None:
    """Why the DNS list `domain` gives nothing to public resolvers, or None."""
    name = domain.lower().rstrip(".")
    for suffix, why in REFUSING_LISTS.items():
        if name == suffix or name.endswith("." + suffix):
            return why
    return None


def named_lists(subject: Subject, lists: list[RestrictionList]) -> Iterator[tuple[str, Where]]:
    """Every DNS list domain the configuration asks, with where it is named: restriction
    arguments, smtpd_dnsbl_sites, maps_rbl_domains, postscreen_dnsbl_sites."""
    for rl in lists:
        for step in rl.steps:
            if step.name in DOMAIN_ARGUMENT and step.arg:
                yield step.arg.partition("=")[0], rl.where
    cfg = subject.cfg
    for param in ("smtpd_dnsbl_sites", "maps_rbl_domains", "postscreen_dnsbl_sites"):
        if cfg.is_set(param):
            for item in cfg.get_list(param):
                yield item.partition("=")[0].partition("*")[0], subject.where(param)


def check_resolver(subject: Subject, lists: list[RestrictionList],
                   resolv_conf: str) -> Iterator[Finding]:
    hosts, source = resolvers(subject, resolv_conf)
    used = [(host, who) for host in hosts if (who := public(host)) is not None]
    if not used:
        return
    named = ", ".join(f"{host} ({who})" for host, who in used)
    for domain, where in dict.fromkeys(named_lists(subject, lists)):
        why = refusing(domain)
        if why is not None:
            yield Finding(where, "public-resolver-dnsbl",
                          f"{domain} never lists a client here: {why}, and the resolver in use "
                          f"is {named} ({source})", "run a local resolver (e.g. unbound) and set "
                          "resolver_servers = 127.0.0.1, or use the list's keyed service")
