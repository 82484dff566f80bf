"""Reads master.cf as Postfix 3.7 does, picks the smtpd services to run, prints postconf -M/-P."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, replace
from types import MappingProxyType

from mailgate.config.config import Config
from mailgate.config.masterfile import (
    BLANKS,
    COLUMNS,
    FIELDS,
    INDENT,
    LINE_LIMIT,
    MIN_FIELDS,
    TYPES,
    VALUE_OPTIONS,
    MasterCf,
    ServiceEntry,
    daemon_options,
    extract_braced,
    load_master_cf,
    parse_master_cf,
    split_nameval,
    split_quoted,
)
from mailgate.config.params import BY_NAME
from mailgate.errors import ConfigError

__all__ = [
    "BLANKS", "COLUMNS", "FIELDS", "INDENT", "INTERNAL", "LINE_LIMIT", "MIN_FIELDS",
    "REFUSED", "TRANSPORT_PARAMETERS", "TYPES", "VALUE_OPTIONS", "MasterCf", "ServiceEntry",
    "SmtpdService", "daemon_options", "extract_braced", "listen_address", "load_master_cf",
    "parse_master_cf", "postscreen_config", "service_config", "smtpd_services",
    "split_nameval", "split_quoted", "unused_overrides",
]

INTERNAL = frozenset({
    "anvil", "bounce", "cleanup", "discard", "dnsblog", "error", "flush", "lmtp", "local",
    "oqmgr", "pickup", "postlogd", "proxymap", "qmgr", "scache", "showq", "smtp", "tlsmgr",
    "tlsproxy", "trivial-rewrite", "verify", "virtual",
})
# Services that mailgate does not run: a line for one stops start-up (decision 0054).
REFUSED = MappingProxyType({
    "spawn": "mailgate does not spawn programs: start the policy server yourself",
    "qmqpd": "mailgate does not speak QMQP",
})
# main.cf parameters that name a transport (a master.cf service) mail is delivered with.
TRANSPORT_PARAMETERS = ("default_transport", "relay_transport", "local_transport",
                        "virtual_transport")


@dataclass(frozen=True, slots=True)
class SmtpdService:
    """An `smtpd` service of type inet: where it listens and its `-o` overrides (raw, in order).

    `host` is None when the service name has no host part: the caller listens on what
    `inet_interfaces` says, as Postfix's master does. A `postscreen` line with the `smtpd`
    service of type `pass` behind it is one service with postscreen on: `overrides` and
    `origin` are the pass service's, `postscreen` the postscreen line's `-o` settings
    (None: no postscreen) and `postscreen_origin` its place (decision 0065).
    """

    name: str
    host: str | None
    port: int
    overrides: tuple[tuple[str, str], ...]
    origin: str
    postscreen: tuple[tuple[str, str], ...] | None = None
    postscreen_origin: str = ""


def smtpd_services(master: MasterCf, config: Config | None = None) -> list[SmtpdService]:
    """The `smtpd` services of type inet, in file order; every other line is checked.

    Internal services (INTERNAL) are accepted and ignored; a service mailgate does not run
    raises ConfigError "FILE:LINE: service NAME: why" (decision 0054). With `config`, a
    `pipe` transport that a transport parameter names is refused too.
    """
    named = _named_transports(config) if config is not None else frozenset()
    passes = {e.name: e for e in master.entries if e.command == "smtpd" and e.type == "pass"}
    screened = {_handed_to(e, config) for e in master.entries
                if e.command == "postscreen" and e.type == "inet"}
    services = []
    for entry in master.entries:
        if entry.command == "smtpd" and entry.type == "inet":
            services.append(_smtpd_service(entry))
            continue
        if entry.command == "postscreen" and entry.type == "inet":
            services.append(_postscreen_service(entry, passes, config))
            continue
        if entry.command == "smtpd" and entry.type == "pass" and entry.name in screened:
            continue  # behind a postscreen line
        why = _refusal(entry, named)
        if why is not None:
            raise ConfigError(f"{entry.origin}: service {entry.name}: {why}")
    return services


def _named_transports(config: Config) -> frozenset[str]:
    return frozenset(config.get_str(p).partition(":")[0] for p in TRANSPORT_PARAMETERS)


def _refusal(entry: ServiceEntry, named: frozenset[str]) -> str | None:
    """Why mailgate cannot take this line, or None when it is accepted (and ignored)."""
    command = entry.command
    if command == "smtpd":
        return (f"smtpd of type {entry.type} takes connections handed over by postscreen or "
                "another program, and no postscreen line hands clients to it; mailgate runs "
                "smtpd as an inet service, or behind postscreen")
    if command == "postscreen":
        return f"postscreen as a {entry.type} service: mailgate runs postscreen as inet only"
    if command in REFUSED:
        return REFUSED[command]
    if command == "pipe":
        if entry.name in named:
            return ("mailgate has no pipe(8) delivery agent, and a transport parameter in "
                    "main.cf sends mail to this service")
        return None  # an idle transport: Postfix too starts it only when mail is sent to it
    if command not in INTERNAL:
        return f"unknown command {command}: mailgate does not run it"
    if entry.type in ("inet", "pass"):
        return f"{command} as a {entry.type} service: mailgate listens only with smtpd"
    return None


def _handed_to(entry: ServiceEntry, config: Config | None) -> str:
    """The `pass` service a postscreen line hands clients to (smtpd_service_name)."""
    for name, value in reversed(entry.overrides):
        if name == "smtpd_service_name":
            return value
    return config.get_str("smtpd_service_name") if config is not None else "smtpd"


def _postscreen_service(entry: ServiceEntry, passes: dict[str, ServiceEntry],
                        config: Config | None) -> SmtpdService:
    """A postscreen inet line and the smtpd pass service behind it: one listener."""
    where = f"{entry.origin}: service {entry.name}"
    _check_options(entry, where)
    target = _handed_to(entry, config)
    behind = passes.get(target)
    if behind is None:
        raise ConfigError(f"{where}: postscreen hands clients to service {target} of type "
                          "pass, which master.cf does not have")
    _check_options(behind, f"{behind.origin}: service {behind.name}")
    host, port = listen_address(entry.name, where)
    return SmtpdService(entry.name, host, port, behind.overrides, behind.origin,
                        postscreen=entry.overrides, postscreen_origin=entry.origin)


def _smtpd_service(entry: ServiceEntry) -> SmtpdService:
    where = f"{entry.origin}: service {entry.name}"
    _check_options(entry, where)
    host, port = listen_address(entry.name, where)
    return SmtpdService(entry.name, host, port, entry.overrides, entry.origin)


def _check_options(entry: ServiceEntry, where: str) -> None:
    """Only `-o name=value`, `-v` and `-D`, and no other arguments."""
    options, rest = daemon_options(entry.args)
    if rest:
        raise ConfigError(f"{where}: unexpected argument: {' '.join(rest)}")
    for option, value in options:
        if option == "-o":
            try:
                split_nameval(value or "")
            except ValueError as exc:
                raise ConfigError(f'{where}: invalid "-o {value or ""}" option value: '
                                  f"{exc}") from None
        elif option not in ("-v", "-D"):
            raise ConfigError(f"{where}: unsupported option: {option}")


def listen_address(name: str, where: str) -> tuple[str | None, int]:
    """`port`, `host:port` or `[v6]:port` → (host or None, port); a name via /etc/services."""
    host: str | None
    if name.startswith("[") and "]:" in name:
        host, _, port = name[1:].partition("]:")
    elif ":" in name:
        host, _, port = name.rpartition(":")
    else:
        host, port = None, name
    if port.isdigit():
        number = int(port)
        if not 0 < number < 65536:
            raise ConfigError(f"{where}: bad port: {port}")
        return host or None, number
    try:
        return host or None, socket.getservbyname(port, "tcp")
    except OSError:
        raise ConfigError(f"{where}: unknown service: {port}/tcp") from None


def service_config(base: Config, service: SmtpdService) -> Config:
    """The configuration one service runs with: main.cf, `$service_name`, then its `-o`.
    Behind postscreen the listener reads a PROXY header when postscreen would
    (postscreen_upstream_proxy_protocol), never because of smtpd's own parameter."""
    defaults = MappingProxyType({**base.defaults, "service_name": service.name})
    named = replace(base, defaults=defaults, _cache={})
    cfg = named.with_overrides(service.overrides, service.origin)
    screening = postscreen_config(base, service)
    if screening is None:
        return cfg
    return cfg.with_overrides([(f"smtpd_upstream_proxy_{name}",
                                screening.get_str(f"postscreen_upstream_proxy_{name}"))
                               for name in ("protocol", "timeout")], service.postscreen_origin)


def postscreen_config(base: Config, service: SmtpdService) -> Config | None:
    """The configuration postscreen runs with on this service: main.cf, `$service_name`,
    then the postscreen line's `-o` (None: the service has no postscreen)."""
    if service.postscreen is None:
        return None
    defaults = MappingProxyType({**base.defaults, "service_name": service.name})
    named = replace(base, defaults=defaults, _cache={})
    return named.with_overrides(service.postscreen, service.postscreen_origin)


def unused_overrides(master: MasterCf, config: Config) -> list[str]:
    """postconf's "unused parameter" warnings for `-o` names that nothing uses or refers to."""
    values = [config.raw(name) or "" for name in [*config.explicit, *config.defaults]]
    values += [value for entry in master.entries for _, value in entry.overrides]
    referenced = {name for value in values for name in _REFERENCE.findall(value)}
    return [f"{entry.origin}: unused parameter: {name}={value}"
            for entry in master.entries for name, value in entry.overrides
            if name not in BY_NAME and name not in referenced]


_REFERENCE = re.compile(r"\$\{?\(?([A-Za-z0-9_]+)")
