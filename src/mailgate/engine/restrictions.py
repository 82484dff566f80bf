"""One small function per Postfix restriction name, found in a registry (no dispatch chain)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailgate.addressing import AddressClass, find_address
from mailgate.engine.actions import DUNNO, OK, Action, reject
from mailgate.engine.context import EngineTables, Request
from mailgate.errors import MapConfigError, MapError


@dataclass(frozen=True)
class Codes:
    """Reply-code parameters (Postfix 3.7 names and defaults)."""

    reject_code: int = 554
    defer_code: int = 450
    relay_domains_reject_code: int = 554
    unknown_local_recipient_reject_code: int = 550
    unknown_virtual_mailbox_reject_code: int = 550
    unknown_virtual_alias_reject_code: int = 550
    unknown_relay_recipient_reject_code: int = 550
    show_user_unknown_table_name: bool = True
    soft_bounce: bool = False


@dataclass(frozen=True)
class Env:
    """The dependencies handed to every restriction."""

    tables: EngineTables
    codes: Codes


Restriction = Callable[[Request, Env], Action]
REGISTRY: dict[str, Restriction] = {}


def restriction(*names: str) -> Callable[[Restriction], Restriction]:
    def register(func: Restriction) -> Restriction:
        for name in names:
            REGISTRY[name] = func
        return func

    return register


def lookup_failure(req: Request, exc: MapError, env: Env) -> Action:
    """A table failure: `451 4.3.5` for a configuration error, `451 4.3.0` otherwise."""
    if isinstance(exc, MapConfigError):
        return reject(451, "4.3.5", f"<{req.recipient}>: Recipient address rejected: "
                      "Server configuration error")
    return reject(451, "4.3.0", f"<{req.recipient}>: Temporary lookup failure")


@restriction("permit")
def permit(req: Request, env: Env) -> Action:
    return OK


@restriction("reject")
def reject_all(req: Request, env: Env) -> Action:
    return reject(env.codes.reject_code, "5.7.1",
                  f"<{req.recipient}>: Recipient address rejected: Access denied",
                  env.codes.soft_bounce)


@restriction("defer")
def defer(req: Request, env: Env) -> Action:
    return reject(env.codes.defer_code, "4.3.2",
                  f"<{req.recipient}>: Recipient address rejected: Try again later")


@restriction("permit_mynetworks")
def permit_mynetworks(req: Request, env: Env) -> Action:
    try:
        hit = env.tables.mynetworks.match(req.client.name, req.client.addr)
    except MapError:
        return reject(451, "4.3.0", f"<{req.client.namaddr}>: Temporary lookup failure")
    return OK if hit else DUNNO


@restriction("permit_sasl_authenticated")
def permit_sasl_authenticated(req: Request, env: Env) -> Action:
    return DUNNO  # no SASL in this server yet


def _authorized_destination(req: Request, env: Env) -> bool:
    resolved = env.tables.resolver.resolve(req.recipient)
    if "@" not in resolved.address:
        return True
    if resolved.routed:
        return False
    return resolved.cls.final or resolved.cls is AddressClass.RELAY


@restriction("permit_auth_destination")
def permit_auth_destination(req: Request, env: Env) -> Action:
    try:
        return OK if _authorized_destination(req, env) else DUNNO
    except MapError as exc:
        return lookup_failure(req, exc, env)


@restriction("reject_unauth_destination")
def reject_unauth_destination(req: Request, env: Env) -> Action:
    try:
        if _authorized_destination(req, env):
            return DUNNO
    except MapError as exc:
        return lookup_failure(req, exc, env)
    return reject(env.codes.relay_domains_reject_code, "5.7.1",
                  f"<{req.recipient}>: Relay access denied", env.codes.soft_bounce)


@restriction("defer_unauth_destination")
def defer_unauth_destination(req: Request, env: Env) -> Action:
    try:
        if _authorized_destination(req, env):
            return DUNNO
    except MapError as exc:
        return lookup_failure(req, exc, env)
    return reject(env.codes.relay_domains_reject_code - 100, "4.7.1",
                  f"<{req.recipient}>: Relay access denied")


_EXEMPT_LOCAL = ("postmaster@", "mailer-daemon@", "double-bounce@")


@restriction("reject_unlisted_recipient", "check_recipient_maps")
def reject_unlisted_recipient(req: Request, env: Env) -> Action:
    """smtpd_check.c check_rcpt_maps(): unknown users of the domain's address class."""
    tables, codes = env.tables, env.codes
    try:
        resolved = tables.resolver.resolve(req.recipient)
        cls = resolved.cls
        table, code, where = None, 0, ""
        if cls is AddressClass.LOCAL:
            if resolved.address.lower().startswith(_EXEMPT_LOCAL):
                return DUNNO
            table, code = tables.local_recipient_maps, codes.unknown_local_recipient_reject_code
            where = "local recipient table"
        elif cls is AddressClass.VIRTUAL:
            table, code = tables.virtual_mailbox_maps, codes.unknown_virtual_mailbox_reject_code
            where = "virtual mailbox table"
        elif cls is AddressClass.ALIAS:
            table, code = tables.virtual_alias_maps, codes.unknown_virtual_alias_reject_code
            where = "virtual alias table"
        elif cls is AddressClass.RELAY:
            table, code = tables.relay_recipient_maps, codes.unknown_relay_recipient_reject_code
            where = "relay recipient table"
        if table is None:
            return DUNNO
        found = find_address(table, resolved.address, tables.recipient_delimiter,
                             local=cls is AddressClass.LOCAL)
    except MapError as exc:
        return lookup_failure(req, exc, env)
    if found is not None:
        return DUNNO
    suffix = f" in {where}" if codes.show_user_unknown_table_name else ""
    return reject(code, "5.1.1", f"<{req.recipient}>: Recipient address rejected: "
                  f"User unknown{suffix}", codes.soft_bounce)
