"""DNS block and allow lists: reject_rbl_client, reject_rhsbl_*, permit_dnswl_client,
permit_rhswl_client (smtpd_check.c), their reply template, and mailgate's weighted
`reject_dnsbl_score`. List errors (127.255.255.0/24, answers outside 127/8 or outside the
reply filter) are never listings."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from mailgate.config.maincf import expand
from mailgate.dns.rbl import (
    SOFT,
    Paged,
    PatternError,
    RblEntry,
    Site,
    list_error,
    parse_site,
    reverse_query,
    txt_reason,
)
from mailgate.dns.resolver import NOTFOUND, OK, POLICY
from mailgate.engine.dnschecks import CLASSES, dns, subject
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.recipients import authorized_destination
from mailgate.engine.reply import Status, dsn_fix, dsn_split, dsn_valid
from mailgate.errors import ConfigError, MapError
from mailgate.smtp.hostnames import valid_hostname

# rbl_reject_reply()'s buffer: a template that ends with its status code makes Postfix send
# the rest of this buffer, whose bytes printable() shows as spaces (decision 0031)
REPLY_BUFFER = 100
ERROR = "error"  # a temporary failure (dnswl: defer_if_reject)


@dataclass(frozen=True, slots=True)
class Listing:
    txt: str | None  # the TXT record's text, None when there is none


def site(ev: Evaluation, spec: str) -> Site | None:
    try:
        return parse_site(spec)
    except PatternError as exc:
        ev.warn(f"{spec}: {exc}")
        return None


def list_problem(ev: Evaluation, query: str, site: Site, addrs: list[str],
                 strict: bool = True) -> list[str]:
    """The answers that are listings; the others are logged and counted as list errors
    (an answer outside the site's filter too, unless `strict` is off: scoring entries
    split one list's codes between filters)."""
    listed = []
    for addr in addrs:
        why = list_error(addr)
        if not why and site.pattern is not None and not site.pattern.match(addr):
            if not strict:
                continue
            why = f"answer outside the filter {site.pattern.text}"
        if why:
            ev.warn(f"{site.domain}: list error: {query} answered {addr}: {why}; not a listing")
            ev.tables.list_errors[site.domain] = ev.tables.list_errors.get(site.domain, 0) + 1
        else:
            listed.append(addr)
    return listed


async def pagein(ev: Evaluation, query: str) -> RblEntry:
    """rbl_pagein() through the process's cache: the A answers, and the TXT text when there
    are A answers (whatever the filter); a failure other than "not found" is logged once and
    is SOFT."""
    lookup = dns(ev)
    cached, entry = lookup.rbl_cache.get(query)
    if cached:
        return entry
    result = await lookup.lookup(query, "A")
    if result.status == OK:
        found = await lookup.lookup(query, "TXT")
        text = None
        if found.status == OK:
            text = txt_reason(r.data for r in found.records)
        elif found.status == POLICY:
            ev.warn(f"{query}: TXT lookup error: DNS reply filter drops all results")
        entry = Paged(tuple(r.data for r in result.records if r.type == "A"), text)
    elif result.status != NOTFOUND:
        ev.warn(f"{query}: RBL lookup error: {result.why}")
        entry = SOFT
    else:
        entry = None
    lookup.rbl_cache.put(query, entry)
    return entry


async def lookup(ev: Evaluation, site: Site, key: str, strict: bool = True
                 ) -> Listing | str | None:
    """find_dnsxl_addr() / find_dnsxl_domain(): a Listing when an A answer matches the
    site's filter (any answer without one), ERROR when the lookup failed, else None."""
    query = f"{key}.{site.domain}"
    found = await pagein(ev, query)
    if found == SOFT:
        return ERROR
    if not isinstance(found, Paged):
        return None
    listed = list_problem(ev, query, site, list(found.addrs), strict)
    if not listed:
        return None
    ev.tables.metrics.dnsbl_hit(site.domain)
    return Listing(found.txt)


def _filtered(ev: Evaluation, value: str) -> str:
    """mac_expand()'s filter: each byte outside smtpd_expansion_filter becomes `_` (a
    character of several UTF-8 bytes several)."""
    allowed = ev.settings.expansion_filter
    if all(c in allowed for c in value):
        return value
    return "".join(c if c in allowed else "_" * len(c.encode("utf-8", "surrogateescape"))
                   for c in value)


def smtpd_macro(ev: Evaluation, name: str) -> str | None:
    """smtpd_expand_lookup(): session attributes by name; an unknown name is warned about
    and undefined. Without a sender (recipient) every sender* (recipient*) name is empty; the
    null sender is `<>` (its domain empty)."""
    st = ev.st
    if name == "server_name":
        return ev.tables.myhostname
    simple = {"client": st.namaddr, "client_port": str(st.client.port),
              "client_address": st.client.addr, "client_name": st.client.name,
              "reverse_client_name": st.client.reverse_name, "helo_name": ev.helo or ""}
    if name in simple:
        return simple[name]
    for prefix, addr in (("sender", ev.sender), ("recipient", ev.recipient)):
        if not name.startswith(prefix):
            continue
        if addr is None:
            return ""
        suffix = name[len(prefix):]
        local, at, domain = addr.rpartition("@")
        if suffix == "":
            return addr or "<>"
        if suffix == "_name":
            return (local if at else addr) if addr else "<>"
        if suffix == "_domain":
            return domain if at else ""
        break
    if name == "localtime":
        return time.strftime("%b %d %H:%M:%S")
    ev.warn(f'unknown macro name "{name}" in expansion request')
    return None


_PLAIN = re.compile(r"\$(?:\{(\w+)\}|\((\w+)\)|(\w+))")


def plain_names(template: str) -> set[str]:
    """The names a template uses as `$name`, `${name}` or `$(name)`: an undefined one makes
    mac_expand() fail (in `${name?x}` / `${name:x}` it is just empty)."""
    return {a or b or c for a, b, c in _PLAIN.findall(template)}


def reply(ev: Evaluation, spec: str, domain: str, what: str, cls: str, txt: str | None,
          template: str | None = None) -> Status:
    """rbl_reject_reply(): rbl_reply_maps (keyed by the list as written) or default_rbl_reply,
    expanded; a template that does not start with a 4xx/5xx code gives 450 4.7.1."""
    table = ev.tables.rbl_reply_maps
    if template is None and table is not None:
        try:
            template = table.lookup(spec)
        except MapError:
            ev.warn(f'{getattr(table, "spec", "rbl_reply_maps")} lookup error for "{spec}"')
            ev.server_error()
    values = {"rbl_code": str(ev.settings.code("maps_rbl_reject_code")), "rbl_domain": domain,
              "rbl_what": what, "rbl_class": cls, "rbl_txt": txt or "", "rbl_reason": txt or ""}

    unknown: list[str] = []

    def get(name: str) -> str | None:
        """rbl_expand_lookup(): the rbl_* names, then the session's."""
        value = values[name] if name in values else smtpd_macro(ev, name)
        if value is None:
            unknown.append(name)
            return None
        return _filtered(ev, value).replace("$", "$$")

    text = ""
    default = ev.settings.default_rbl_reply
    for candidate in (template, default):
        if candidate is None:
            continue
        unknown.clear()
        try:
            text = expand(candidate, get)
            if not set(unknown) & plain_names(candidate):
                break
        except ConfigError:
            pass
        if candidate is default:  # Postfix's smtpd exits here (decision 0032)
            ev.engine.log(f"fatal: rbl_reject_reply: bad default rbl reply template: {default}")
            return ev.reject(451, "4.3.5", "Server configuration error", hard=True)
        ev.warn(f"rbl_reject_reply: bad rbl reply template for domain {spec}: {candidate}")
    if len(text) < 4 or not text[:3].isdigit() or text[3] != " " or text[0] not in "45":
        ev.warn(f"rbl response code configuration error: {text}")
        return ev.reject(450, "4.7.1", "Service unavailable")
    dsn, detail = dsn_split("4.7.1", text[4:])
    rest = text[4:].lstrip()
    if rest and dsn_valid(rest) == len(rest):
        detail = " " * max(0, REPLY_BUFFER - 1 - len(text))  # decision 0031
    return ev.reject(int(text[:3]), dsn_fix(dsn, cls, ev.info), detail or "Service unavailable")


def _argument(ev: Evaluation, args: Args, name: str) -> str | None:
    spec = args.take()
    if spec is None:
        ev.warn(f"restriction {name} requires domain name argument")
    return spec


async def reject_rbl_addr(ev: Evaluation, spec: str, addr: str, cls: str) -> Status:
    listed = site(ev, spec)
    key = reverse_query(addr)
    if listed is None or key is None:
        return Status.DUNNO
    found = await lookup(ev, listed, key)
    if not isinstance(found, Listing):
        return Status.DUNNO
    return reply(ev, spec, listed.domain, addr, cls, found.txt)


def rhs_domain(ev: Evaluation, what: str) -> str | None:
    """find_dnsxl_domain(): the domain an RHS list is asked about (a non-ASCII one in ASCII
    form, converted by smtpd's midna cache); None for address literals, numeric last labels
    and names that are not valid host names (a trailing dot included)."""
    at = what.rfind("@")
    domain = what[at + 1:] if at >= 0 else what
    if not domain or (at >= 0 and domain.startswith("[")):
        return None
    last = domain.rpartition(".")[2]
    if last.isascii() and last.isdigit():
        return None
    if not domain.isascii():
        domain = ev.tables.idna.to_ascii(domain, ev.warn) or domain
    return domain if valid_hostname(domain) else None


async def reject_rbl_domain(ev: Evaluation, spec: str, what: str, cls: str) -> Status:
    listed = site(ev, spec)
    domain = rhs_domain(ev, what)
    if listed is None or domain is None:
        return Status.DUNNO
    found = await lookup(ev, listed, domain)
    if not isinstance(found, Listing):
        return Status.DUNNO
    return reply(ev, spec, listed.domain, what, cls, found.txt)


@restriction("reject_rbl_client", "reject_rbl")
async def reject_rbl_client(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec = _argument(ev, args, "reject_rbl_client")
    if spec is None:
        return Status.DUNNO
    return await reject_rbl_addr(ev, spec, ev.st.client.addr, "Client host")


@restriction("reject_maps_rbl")
async def reject_maps_rbl(ev: Evaluation, frame: Frame, args: Args) -> Status:
    if "reject_maps_rbl" not in ev.tables.warned:
        ev.tables.warned.add("reject_maps_rbl")
        ev.warn('support for restriction "reject_maps_rbl" will be removed from Postfix; '
                'use "reject_rbl_client domain-name" instead')
    for spec in ev.settings.maps_rbl_domains:
        status = await reject_rbl_addr(ev, spec, ev.st.client.addr, "Client host")
        if status is not Status.DUNNO:
            return status
    return Status.DUNNO


def _rhs(kind: str) -> None:
    name = f"reject_rhsbl_{kind}"

    async def check(ev: Evaluation, frame: Frame, args: Args) -> Status:
        spec = _argument(ev, args, name)
        what = subject(ev, kind)
        if spec is None or what is None:
            return Status.DUNNO
        return await reject_rbl_domain(ev, spec, what, CLASSES[kind])

    restriction(name)(check)


for _kind in CLASSES:
    _rhs(_kind)


async def _allow(ev: Evaluation, name: str, spec: str, key: str | None, addr: str) -> Status:
    """permit_dnswl_addr() / permit_rhswl_domain(): OK if listed, never for a recipient this
    server is not authorised to accept; a lookup failure defers a later reject."""
    recipient = ev.recipient
    if ev.st.where == "RCPT" and recipient and not authorized_destination(ev, recipient):
        return Status.DUNNO
    listed = site(ev, spec)
    if listed is None or key is None:
        return Status.DUNNO
    found = await lookup(ev, listed, key)
    if found == ERROR:
        return ev.defer_if_reject(450, "4.7.1",
                                  f"<{addr}>: Client host rejected: Service unavailable")
    if isinstance(found, Listing):
        return ev.permit(name, Frame(ev.st.namaddr, "Client host", None))
    return Status.DUNNO


@restriction("permit_dnswl_client")
async def permit_dnswl_client(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec = _argument(ev, args, "permit_dnswl_client")
    if spec is None:
        return Status.DUNNO
    addr = ev.st.client.addr
    return await _allow(ev, "permit_dnswl_client", spec, reverse_query(addr), addr)


@restriction("permit_rhswl_client")
async def permit_rhswl_client(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec = _argument(ev, args, "permit_rhswl_client")
    if spec is None:
        return Status.DUNNO
    name = subject(ev, "client")
    if name is None:
        return Status.DUNNO
    return await _allow(ev, "permit_rhswl_client", spec, rhs_domain(ev, name), name)


# --- beyond Postfix: weighted scoring across lists --------------------------------------------

async def score(ev: Evaluation, addr: str) -> tuple[int, list[str]]:
    """Every smtpd_dnsbl_sites entry asked at once (one query per list domain); the sum of
    the weights of the entries whose filter matches (postscreen's rule)."""
    key = reverse_query(addr)
    sites = ev.settings.dnsbl_sites
    if key is None or not sites:
        return 0, []
    answers = await asyncio.gather(*(lookup(ev, s, key, strict=False) for s in sites))
    total = 0
    hits: list[str] = []
    for listed, found in zip(sites, answers, strict=True):
        if isinstance(found, Listing):
            total += listed.weight
            if listed.weight > 0 and listed.domain not in hits:
                hits.append(listed.domain)
    return total, hits


@restriction("reject_dnsbl_score")
async def reject_dnsbl_score(ev: Evaluation, frame: Frame, args: Args) -> Status:
    addr = ev.st.client.addr
    total, hits = await score(ev, addr)
    threshold = ev.settings.dnsbl_threshold
    ev.note(f"DNSBL score {total} (threshold {threshold}): {', '.join(hits) or 'no lists'}")
    if total < threshold or not hits:
        return Status.DUNNO
    return reply(ev, "reject_dnsbl_score", ", ".join(hits), addr, "Client host",
                 f"DNSBL score {total} >= {threshold}",
                 ev.settings.dnsbl_reply or ev.settings.default_rbl_reply)
