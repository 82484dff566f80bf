"""One `check_policy_service` endpoint's settings: main.cf's smtpd_policy_service_* values,
overridden per service by Postfix 3.0's `{ endpoint, name = value, ... }` syntax."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from mailgate.config.config import Config
from mailgate.config.maincf import split_list
from mailgate.errors import ConfigError

NAME = "check_policy_service"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIMES = ("timeout", "max_idle", "max_ttl", "retry_delay")
_INTS = {"request_limit": 0, "try_limit": 1}  # name -> minimum
_STRS = ("default_action", "policy_context")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    name: str  # the restriction's argument as written: the table name in log lines
    transport: str  # "inet" or "unix"
    endpoint: str  # host:port, or a socket path (logged as written)
    path: str  # a unix socket's path made absolute (relative: to queue_directory)
    timeout: float
    max_idle: float
    max_ttl: float
    retry_delay: float
    try_limit: int
    request_limit: int
    default_action: str
    policy_context: str
    connection_limit: int  # connections per worker process (Postfix: one per smtpd process)


def defaults(cfg: Config) -> ServiceSettings:
    return ServiceSettings(
        name="", transport="", endpoint="", path="",
        timeout=cfg.get_time("smtpd_policy_service_timeout"),
        max_idle=cfg.get_time("smtpd_policy_service_max_idle"),
        max_ttl=cfg.get_time("smtpd_policy_service_max_ttl"),
        retry_delay=cfg.get_time("smtpd_policy_service_retry_delay"),
        try_limit=cfg.get_int("smtpd_policy_service_try_limit"),
        request_limit=cfg.get_int("smtpd_policy_service_request_limit"),
        default_action=cfg.get_str("smtpd_policy_service_default_action"),
        policy_context=cfg.get_str("smtpd_policy_service_policy_context"),
        connection_limit=cfg.get_int("default_process_limit"))


def parse(name: str, base: ServiceSettings, queue_directory: str) -> ServiceSettings:
    """The settings for one service argument; a ConfigError says what is wrong with it."""
    endpoint_spec, overrides = name, {}
    if name.startswith("{"):
        if not name.endswith("}"):
            raise ConfigError(f"policy service syntax error: missing '}}' in \"{name}\"")
        items = split_list(name[1:-1])
        if not items:
            raise ConfigError(f'empty policy service: "{name}"')
        endpoint_spec = items[0]
        overrides = dict(_nameval(item) for item in items[1:])
    transport, sep, endpoint = endpoint_spec.partition(":")
    if not sep or not transport or not endpoint:
        raise ConfigError(f'need service transport:endpoint instead of "{endpoint_spec}"')
    if transport not in ("inet", "unix", "local"):
        raise ConfigError(f"invalid transport name: {transport} in service: {endpoint_spec}")
    transport = "unix" if transport == "local" else transport
    if transport == "inet" and not re.fullmatch(r"(\[[^]]+\]|[^:\[\]]*):[\w.-]+", endpoint):
        raise ConfigError(f'policy service "{endpoint_spec}": need inet:host:port')
    path = os.path.join(queue_directory, endpoint) if transport == "unix" else ""
    out = replace(base, name=name, transport=transport, endpoint=endpoint, path=path)
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        changes[key] = _override(key, value)
    return replace(out, **changes)


def _nameval(item: str) -> tuple[str, str]:
    """split_nameval(): `name = value`, the whole possibly in braces."""
    text = item[1:-1] if item.startswith("{") and item.endswith("}") else item
    key, eq, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not key:
        raise ConfigError(f'malformed option: missing attribute name: "...{text}..."')
    if not eq or any(c.isspace() for c in key):
        raise ConfigError(f"malformed option: missing '=' after attribute name: "
                          f'"...{text}..."')
    return key, value


def _override(key: str, value: str) -> str | int | float:
    """attr_override(): one `name = value`, checked as its main.cf parameter would be."""
    if key in _STRS:
        return value
    if key in _INTS:
        if not re.fullmatch(r"-?[0-9]+", value):
            raise ConfigError(f"bad numerical configuration: {key} = {value}")
        if int(value) < _INTS[key]:
            raise ConfigError(f"invalid {key} parameter value {value} < {_INTS[key]}")
        return int(value)
    if key in _TIMES:
        m = re.fullmatch(r"([0-9]+)([smhdw]?)", value.lower())
        if m is None:
            raise ConfigError(f"{key}: bad time value or unit: {value}")
        seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
        if seconds < 1:
            raise ConfigError(f"invalid {key} parameter value {seconds} < 1")
        return float(seconds)
    raise ConfigError(f'unknown option: "{key} = {value}"')


def service_names(lists: Iterable[tuple[str, ...]]) -> Iterator[str]:
    """Every policy service named in these restriction lists (registered at start-up)."""
    for names in lists:
        for before, name in itertools.pairwise(names):
            if before.lower() == NAME and ":" in name:
                yield name
