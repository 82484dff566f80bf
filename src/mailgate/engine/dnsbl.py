"""DNS block and allow lists: reject_rbl_client, reject_rhsbl_*, permit_dnswl_client,
permit_rhswl_client (smtpd_check.c), their reply template, and mailgate's weighted
`reject_dnsbl_score`. List errors (127.255.255.0/24, answers outside 127/8 or outside the
reply filter) are never listings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailgate.config.maincf import expand
from mailgate.dns.rbl import PatternError, Site, list_error, parse_site, reverse_query
from mailgate.dns.resolver import NOTFOUND, OK, POLICY, RETRY
from mailgate.engine.dnschecks import CLASSES, dns, subject
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.recipients import authorized_destination
from mailgate.engine.reply import Status, dsn_fix, dsn_split
from mailgate.errors import ConfigError, MapError

TXT_LIMIT = 500
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


async def lookup(ev: Evaluation, site: Site, key: str, txt: bool = True,
                 strict: bool = True) -> Listing | str | None:
    """rbl_pagein(): the A answer (filtered), then the TXT text for a listing."""
    query = f"{key}.{site.domain}"
    result = await dns(ev).lookup(query, "A")
    if result.status != OK:
        if result.status != NOTFOUND:
            ev.warn(f"{query}: RBL lookup error: {result.why}")
        return ERROR if result.status == RETRY else None
    listed = list_problem(ev, query, site, [r.data for r in result.records], strict)
    if not listed:
        return None
    ev.tables.metrics.dnsbl_hit(site.domain)
    text = None
    if txt:
        found = await dns(ev).lookup(query, "TXT")
        if found.status == OK:
            text = " / ".join(r.data for r in found.records)[:TXT_LIMIT]
        elif found.status == POLICY:
            ev.warn(f"{query}: TXT lookup error: DNS reply filter drops all results")
    return Listing(text)


def _filtered(ev: Evaluation, value: str) -> str:
    allowed = ev.settings.expansion_filter
    return "".join(c if c in allowed else "_" for c in value)


def macros(ev: Evaluation, extra: dict[str, str | None]) -> dict[str, str | None]:
    """smtpd_expand_lookup() names plus the rbl_* ones."""
    st = ev.st
    out: dict[str, str | None] = {
        "client": st.namaddr, "client_address": st.client.addr,
        "client_name": st.client.name, "reverse_client_name": st.client.reverse_name,
        "client_port": str(st.client.port), "helo_name": st.helo,
        "rbl_code": str(ev.settings.code("maps_rbl_reject_code")),
    }
    for name, value in (("sender", st.sender), ("recipient", st.recipient)):
        out[name] = value
        if value is not None:
            local, at, domain = value.rpartition("@")
            out[f"{name}_name"] = local if at else value
            out[f"{name}_domain"] = domain if at else ""
    out.update(extra)
    return out


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
    values = macros(ev, {"rbl_domain": domain, "rbl_what": what, "rbl_class": cls,
                         "rbl_txt": txt, "rbl_reason": txt})

    def get(name: str) -> str | None:
        value = values.get(name)
        return None if value is None else _filtered(ev, value).replace("$", "$$")

    text = ""
    for candidate in (template, ev.settings.default_rbl_reply):
        if candidate is None:
            continue
        try:
            text = expand(candidate, get)
            break
        except ConfigError:
            ev.warn(f"bad rbl reply template for domain {domain}: {candidate}")
    if len(text) < 4 or not text[:3].isdigit() or text[3] != " " or text[0] not in "45":
        ev.warn(f"rbl response code configuration error: {text}")
        return ev.reject(450, "4.7.1", "Service unavailable")
    dsn, detail = dsn_split("4.7.1", text[4:])
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


def rhs_domain(what: str) -> str | None:
    """The domain an RHS list is asked about; None for literals and numeric last labels."""
    at = what.rfind("@")
    domain = what[at + 1:] if at >= 0 else what
    if not domain or domain.startswith("["):
        return None
    last = domain.rstrip(".").rpartition(".")[2]
    if last.isdigit() or not last:
        return None
    return domain


async def reject_rbl_domain(ev: Evaluation, spec: str, what: str, cls: str) -> Status:
    listed = site(ev, spec)
    domain = rhs_domain(what)
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
        what = subject(ev.st, kind)
        if spec is None or what is None:
            return Status.DUNNO
        return await reject_rbl_domain(ev, spec, what, CLASSES[kind])

    restriction(name)(check)


for _kind in CLASSES:
    _rhs(_kind)


async def _allow(ev: Evaluation, name: str, spec: str, key: str | None, addr: str) -> Status:
    """permit_dnswl_addr() / permit_rhswl_domain(): OK if listed, never for a recipient this
    server is not authorised to accept; a lookup failure defers a later reject."""
    st = ev.st
    if st.where == "RCPT" and st.recipient and not authorized_destination(ev, st.recipient):
        return Status.DUNNO
    listed = site(ev, spec)
    if listed is None or key is None:
        return Status.DUNNO
    found = await lookup(ev, listed, key, txt=False)
    if found == ERROR:
        return ev.defer_if_reject(450, "4.7.1",
                                  f"<{addr}>: Client host rejected: Service unavailable")
    if isinstance(found, Listing):
        return ev.permit(name, Frame(st.namaddr, "Client host", None))
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
    name = subject(ev.st, "client")
    if name is None:
        return Status.DUNNO
    return await _allow(ev, "permit_rhswl_client", spec, rhs_domain(name), name)


# --- beyond Postfix: weighted scoring across lists --------------------------------------------

async def score(ev: Evaluation, addr: str) -> tuple[int, list[str]]:
    """Every smtpd_dnsbl_sites entry asked at once (one query per list domain); the sum of
    the weights of the entries whose filter matches (postscreen's rule)."""
    key = reverse_query(addr)
    sites = ev.settings.dnsbl_sites
    if key is None or not sites:
        return 0, []
    answers = await asyncio.gather(*(lookup(ev, s, key, txt=False, strict=False)
                                      for s in sites))
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
