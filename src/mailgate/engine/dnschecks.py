"""Restrictions that ask the DNS about names: unknown HELO / sender / recipient domains (null MX
included), check_*_{mx,ns,a}_access, and permit_mx_backup (smtpd_check.c)."""

from __future__ import annotations

from mailgate.addressing import AddressClass
from mailgate.dns.lookup import STOP_INVAL, STOP_MX_POLICY, STOP_NULLMX, STOP_OK, DnsLookup
from mailgate.dns.resolver import NOTFOUND, NULLMX, OK, POLICY, RETRY, Record
from mailgate.engine.access import forbid_ok, found_result, table_argument
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.hosts import invalid_hostaddr
from mailgate.engine.reply import RECIPIENT, SENDER, Status
from mailgate.errors import MapError
from mailgate.maps.access import address_keys, host_keys
from mailgate.maps.base import Map
from mailgate.smtp.hostnames import valid_hostaddr, valid_mailhost_literal


def dns(ev: Evaluation) -> DnsLookup:
    lookup = ev.tables.dns
    assert lookup is not None, "the engine was built without a resolver"
    return lookup


# Postfix asks for both whatever inet_protocols says (smtpd_check.c RR_ADDR_TYPES with
# HAS_IPV6); host addresses for *_access and permit_mx_backup follow inet_protocols.
ADDR_TYPES = ("A", "AAAA")


def _tempfail(ev: Evaluation, action: str, code: int, dsn: str, text: str) -> Status:
    """DEFER_IF_PERMIT2(): `defer_if_permit` remembers the reply, `defer` replies now."""
    return ev.defer_if_permit(code, dsn, text, explicit=action == "defer_if_permit")


# --- reject_unknown_helo_hostname ---------------------------------------------------------

async def unknown_hostname(ev: Evaluation, name: str, frame: Frame) -> Status:
    """reject_unknown_hostname(): no A, AAAA or MX record (a null MX is fine for a host)."""
    result = await dns(ev).lookup_l(name, (*ADDR_TYPES, "MX"), STOP_OK)
    status = result.status
    if status in (OK, NULLMX):
        return Status.DUNNO
    if status == POLICY:
        ev.warn(f"{name}: address or MX lookup error: DNS reply filter drops all results")
        return Status.DUNNO
    text = f"<{frame.name}>: {frame.cls} rejected: "
    if status != RETRY:
        return ev.reject(ev.settings.code("unknown_hostname_reject_code"), "4.7.1",
                         text + ("Malformed DNS server reply" if status == -3 else
                                 "Host not found"))
    return _tempfail(ev, ev.settings.unknown_helo_tempfail_action, 450, "4.7.1",
                     text + "Host not found")


@restriction("reject_unknown_helo_hostname", "reject_unknown_hostname")
async def reject_unknown_helo_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    helo = ev.helo
    if helo is None:
        return Status.DUNNO
    if helo.startswith("["):
        return invalid_hostaddr(ev, helo, Frame(helo, "Helo command", frame.acl))
    return await unknown_hostname(ev, helo, Frame(helo, "Helo command", frame.acl))


# --- reject_unknown_sender_domain / reject_unknown_recipient_domain ----------------------

async def unknown_mailhost(ev: Evaluation, domain: str, frame: Frame) -> Status:
    """reject_unknown_mailhost(): MX, then A/AAAA (a non-ASCII domain in ASCII form); a null
    MX rejects permanently."""
    if not domain.isascii():
        domain = ev.tables.idna.to_ascii(domain, ev.warn) or domain
    flags = STOP_OK | STOP_INVAL | STOP_NULLMX | STOP_MX_POLICY
    result = await dns(ev).lookup_l(domain, ("MX", *ADDR_TYPES), flags)
    status = result.status
    if status == OK:
        return Status.DUNNO
    if status == POLICY:
        ev.warn(f"{domain}: MX or address lookup error: DNS reply filter drops all results")
        return Status.DUNNO
    sender = frame.cls == SENDER
    prefix = f"<{frame.name}>: {frame.cls} rejected: "
    if status == NULLMX:
        return ev.reject(550 if sender else 556, "4.7.27" if sender else "4.1.10",
                         prefix + f"Domain {domain} does not accept mail (nullMX)")
    dsn = "4.1.8" if sender else "4.1.2"
    if status != RETRY:
        return ev.reject(ev.settings.code("unknown_address_reject_code"), dsn,
                         prefix + ("Malformed DNS server reply" if status == -3 else
                                   "Domain not found"))
    return _tempfail(ev, ev.settings.unknown_address_tempfail_action, 450, dsn,
                     prefix + "Domain not found")


async def unknown_address(ev: Evaluation, addr: str, frame: Frame) -> Status:
    """reject_unknown_address(): skipped for our own (final) domains and address literals."""
    if not addr:
        return Status.DUNNO
    resolved = ev.resolve(addr)
    at = resolved.address.rfind("@")
    if at < 0 or resolved.cls.final:
        return Status.DUNNO
    domain = resolved.address[at + 1:]
    if not domain or (domain[0] == "[" and domain[-1] == "]"):
        return Status.DUNNO
    return await unknown_mailhost(ev, domain, frame)


@restriction("reject_unknown_sender_domain", "reject_unknown_address")
async def reject_unknown_sender_domain(ev: Evaluation, frame: Frame, args: Args) -> Status:
    sender = ev.sender
    if not sender:
        return Status.DUNNO
    return await unknown_address(ev, sender, Frame(sender, SENDER, frame.acl))


@restriction("reject_unknown_recipient_domain")
async def reject_unknown_recipient_domain(ev: Evaluation, frame: Frame, args: Args) -> Status:
    recipient = ev.recipient
    if not recipient:
        return Status.DUNNO
    return await unknown_address(ev, recipient, Frame(recipient, RECIPIENT, frame.acl))


# --- check_*_{mx,ns,a}_access ---------------------------------------------------------------

async def _servers(ev: Evaluation, domain: str, name: str, rdtype: str
                   ) -> list[Record] | None:
    """The MX or NS hosts of `domain` (the domain itself when it has no MX; the parent's NS
    when it has none); None when nothing applies (a warning says why)."""
    lookup = dns(ev)
    if rdtype == "A":
        return [Record(domain, 0, "A", domain)]
    result = await lookup.lookup(domain, rdtype)
    if result.status == NULLMX:
        return None
    current: str | None = domain
    if result.status == NOTFOUND:
        if rdtype == "MX":
            return [Record(domain, 0, "MX", domain)]
        while current is not None:
            dot = current.find(".")
            if dot < 0 or dot + 1 >= len(current):
                current = None
                break
            current = current[dot + 1:]
            result = await lookup.lookup(current, rdtype)
            if result.status != NOTFOUND:
                break
    if result.status != OK:
        reason = "DNS reply filter policy" if result.status == POLICY else result.error
        where = current if current and len(current) > 1 else name
        ev.warn(f"Unable to look up {rdtype} host for {where}: {reason}")
        return None
    return sorted(result.records, key=lambda r: r.pref) if rdtype == "MX" else list(result.records)


async def check_server_access(ev: Evaluation, spec: str, table: Map, name: str, rdtype: str,
                              frame: Frame) -> Status:
    """check_server_access(): the MX/NS/A hosts of a name, by host name then address."""
    at = name.rfind("@")
    domain = name[at + 1:] if at >= 0 else name
    if domain.startswith("["):
        if rdtype not in ("A", "MX") or not domain.endswith("]"):
            return Status.DUNNO
        bare = domain[1:-1]
        if not valid_mailhost_literal(bare):
            return Status.DUNNO
        bare = bare[5:] if bare.lower().startswith("ipv6:") else bare
        return (await found_result(ev, spec, table, address_keys(bare), bare, frame))[0]
    if not domain.isascii():
        domain = ev.tables.idna.to_ascii(domain, ev.warn) or domain
    servers = await _servers(ev, domain, name, rdtype)
    if servers is None:
        return Status.DUNNO
    parents = ev.settings.access_parent_matches
    names = ev.tables.names
    assert names is not None
    for server in servers:
        host = server.data
        if valid_hostaddr(host):
            status, found = await found_result(ev, spec, table, address_keys(host), host, frame)
            if status is not Status.DUNNO or found:
                return status
            continue
        if rdtype != "A":
            status, found = await found_result(ev, spec, table, host_keys(host, parents), host,
                                          frame)
            if status is not Status.DUNNO or found:
                return status
        addrs = await names.addresses(host)
        if addrs.error:
            if rdtype != "A":
                ev.warn(f"Unable to look up {rdtype} host {host} for {frame.cls} {frame.name}: "
                        f"{addrs.error}")
            continue
        for addr in addrs.values:
            status, found = await found_result(ev, spec, table, address_keys(addr), addr, frame)
            if status is not Status.DUNNO or found:
                return status
    return Status.DUNNO


# What a restriction of each kind is about (smtpd_check.c passes these names and classes).
CLASSES = {"client": "Client host", "reverse_client": "Unverified Client host",
           "helo": "Helo command", "sender": SENDER, "recipient": RECIPIENT}


def subject(ev: Evaluation, kind: str) -> str | None:
    """The name a client/helo/sender/recipient restriction looks at; None when there is none
    (an `unknown` client name, no HELO yet, the null sender)."""
    client = ev.st.client
    if kind == "client":
        name = client.name
    elif kind == "reverse_client":
        name = client.reverse_name
    else:
        return {"helo": ev.helo, "sender": ev.sender, "recipient": ev.recipient}[kind] or None
    return None if name.lower() == "unknown" else name


def _server_restriction(kind: str, rdtype: str) -> None:
    name = f"check_{kind}_{rdtype.lower()}_access".replace("reverse_client_",
                                                           "reverse_client_hostname_")

    async def check(ev: Evaluation, frame: Frame, args: Args) -> Status:
        spec, table = table_argument(ev, args, name)
        target = subject(ev, kind)
        if target is None:
            return Status.DUNNO
        where = Frame(ev.st.namaddr if kind == "client" else target, CLASSES[kind], frame.acl)
        status = await check_server_access(ev, spec, table, target, rdtype, where)
        return forbid_ok(ev, name, status, target)

    restriction(name)(check)


for _kind in CLASSES:
    for _type in ("MX", "NS", "A"):
        _server_restriction(_kind, _type)


# --- permit_mx_backup ---------------------------------------------------------------------------

async def _i_am_mx(ev: Evaluation, hosts: list[Record]) -> bool:
    names = ev.tables.names
    assert names is not None
    mine = ev.tables.inet_interfaces
    for host in hosts:
        if host.data.lower() == ev.tables.myhostname.lower():
            return True
        found = await names.addresses(host.data)
        if any(addr in mine for addr in found.values):
            return True
    return False


async def _primary_permitted(ev: Evaluation, primaries: list[Record]) -> bool:
    networks = ev.tables.mx_backup_networks
    assert networks is not None
    for host in primaries:
        result = await dns(ev).lookup(host.data, "A")
        for record in result.records:
            try:
                if networks.match(host.data, record.data):
                    return True
            except MapError:
                return False
    return False


@restriction("permit_mx_backup")
async def permit_mx_backup(ev: Evaluation, frame: Frame, args: Args) -> Status:
    recipient = ev.recipient
    if not recipient or ev.st.where != "RCPT":
        return Status.DUNNO
    frame = Frame(recipient, RECIPIENT, frame.acl)
    resolved = ev.resolve(recipient)
    at = resolved.address.rfind("@")
    if at < 0:
        return ev.permit("permit_mx_backup", frame)
    domain = resolved.address[at + 1:]
    if not ev.settings.allow_untrusted_routing and resolved.routed:
        return Status.DUNNO
    if resolved.cls.final or resolved.cls is AddressClass.RELAY:
        return ev.permit("permit_mx_backup", frame)
    if domain.startswith("[") and domain.endswith("]"):
        return Status.DUNNO
    if not domain.isascii():
        domain = ev.tables.idna.to_ascii(domain, ev.warn) or domain
    result = await dns(ev).lookup(domain, "MX")
    if result.status != OK:
        if result.status in (RETRY, POLICY):
            reason = "DNS reply filter policy" if result.status == POLICY else result.error
            ev.defer_if_reject(450, "4.4.4", f"<{recipient}>: {RECIPIENT} rejected: Unable to "
                               f"look up mail exchanger information: {reason}")
        return Status.DUNNO
    hosts = sorted(result.records, key=lambda r: r.pref)
    primaries = [h for h in hosts if h.pref == hosts[0].pref]
    backups = hosts[len(primaries):]
    if await _i_am_mx(ev, primaries):
        return Status.DUNNO
    if not backups or not await _i_am_mx(ev, backups):
        return Status.DUNNO
    if ev.tables.mx_backup_networks is not None and ev.tables.mx_backup_networks.items \
            and not await _primary_permitted(ev, primaries):
        return Status.DUNNO
    return ev.permit("permit_mx_backup", frame)
