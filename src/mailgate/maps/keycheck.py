"""Table mistakes that fail silently: keys that never match as written, stale compiled tables.

A fixed-key table (hash, btree, lmdb, texthash, inline, ...) matches keys as text: `*` is no
wildcard and `192.0.2.0/24` is no network, so such a key never matches (access(5); the
article's "use an asterisk as a wild card" is wrong). A compiled table older than its source
is still the one in force. `mailgate postmap` and `mailgate lint` report the first two,
`mailgate serve` and `mailgate lint` the third (docs/decisions/0060-lint.md).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailgate.config.config import Config
from mailgate.config.maincf import split_list
from mailgate.config.mastercf import load_master_cf
from mailgate.errors import ConfigError
from mailgate.maps.compiled import SUFFIX
from mailgate.maps.source import source_lines, split_key_value

WILDCARD_KEY = "wildcard-key"
CIDR_KEY_IN_HASH = "cidr-key-in-hash"
# Table types whose keys are matched as text (Postfix's DICT_FLAG_FIXED types).
FIXED_KEY_TYPES = frozenset({"hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "texthash",
                             "inline"})
# Table types Postfix knows, so that `type:name` in a parameter value is taken for a table.
TABLE_TYPES = FIXED_KEY_TYPES | frozenset({
    "cidr", "regexp", "pcre", "static", "fail", "environ", "unionmap", "pipemap", "unix",
    "proxy", "ldap", "mysql", "pgsql", "sqlite", "memcache", "socketmap", "tcp", "nis",
    "nisplus", "netinfo", "randmap", "internal"})
# Databases Postfix's own daemons write (no source file): never stale.
_CACHE_PARAMETER = re.compile(r".*_cache_(database|map)$|address_verify_map$")
_IPV4_PART = re.compile(r"[0-9]{1,3}|\*")


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """Why a key never matches and what to write instead."""

    code: str  # WILDCARD_KEY or CIDR_KEY_IN_HASH
    message: str
    suggestion: str


@dataclass(frozen=True, slots=True)
class FoundProblem:
    """A KeyProblem at a (logical) line of a table source."""

    line: int
    key: str
    value: str
    problem: KeyProblem


def key_problem(key: str, kind: str = "hash", value: str = "VALUE") -> KeyProblem | None:
    """What is wrong with `key` in a `kind:` table (fixed-key), or None.

    A key that is exactly `*` is left alone: transport(5) tables give it a meaning."""
    if "*" in key and key != "*":
        return KeyProblem(WILDCARD_KEY, f'key "{key}" contains "*", which is no wildcard in a '
                          f"{kind}: table: the key never matches", _wildcard_hint(key, value))
    network = _network(key)
    if network is not None:
        return KeyProblem(CIDR_KEY_IN_HASH, f'key "{key}" is a network, but a {kind}: table '
                          "matches keys as text: the key never matches",
                          _network_hint(network, value))
    return None


def source_problems(text: str, kind: str = "hash") -> list[FoundProblem]:
    """Every key of a postmap source text that never matches, with its logical line."""
    out = []
    for line in source_lines(text):
        parsed = split_key_value(line.text)
        if isinstance(parsed, str):
            continue
        key, value = parsed
        problem = key_problem(key, kind, value)
        if problem is not None:
            out.append(FoundProblem(line.number, key, value, problem))
    return out


def key_warnings(text: str, filename: str, kind: str = "hash") -> list[str]:
    """source_problems() as `mailgate postmap` prints them: `FILE, line N: text`."""
    return [f"{filename}, line {p.line}: {p.problem.message}; {p.problem.suggestion}"
            for p in source_problems(text, kind)]


def _wildcard_hint(key: str, value: str) -> str:
    parts = key.split(".")
    if ":" not in key and all(_IPV4_PART.fullmatch(p) for p in parts) and len(parts) <= 4:
        fixed = list(parts[: parts.index("*")])
        if all(p == "*" for p in parts[len(fixed):]) and all(int(p) < 256 for p in fixed):
            if not fixed:
                return f'use "static:{value}" or the cidr: line "0.0.0.0/0 {value}"'
            length = 8 * len(fixed)
            net = ".".join(fixed + ["0"] * (4 - len(fixed)))
            return (f'use the octet prefix "{".".join(fixed)}" (it matches {net}/{length}) '
                    f'or the cidr: line "{net}/{length} {value}"')
    if key.startswith("*@") and "*" not in key[2:]:
        domain = key[2:]
        return (f'use "{domain}" (an access table matches every address in the domain) or '
                f'"@{domain}" (a virtual or canonical table)')
    if key.endswith("@*") and "*" not in key[:-2]:
        return f'use "{key[:-1]}" (it matches that local part at any domain)'
    if key.startswith("*.") and "*" not in key[2:]:
        domain = key[2:]
        return (f'use "{domain}": access tables match its subdomains too (smtpd_access_maps '
                f'is in parent_domain_matches_subdomains by default), or ".{domain}"')
    return "use a regexp: or pcre: table for a pattern, or a cidr: table for addresses"


def _network(key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "/" not in key:
        return None
    text = key
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        text = text[1:close] + text[close + 1:]
    address, _, length = text.partition("/")
    if not length.isascii() or not length.isdigit() or not (":" in address or "." in address):
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _network_hint(net: ipaddress.IPv4Network | ipaddress.IPv6Network, value: str) -> str:
    cidr = f'the cidr: line "{net} {value}"'
    if net.version == 4 and net.prefixlen % 8 == 0 and net.prefixlen:
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        return f'use the octet prefix "{".".join(octets)}" or {cidr}'
    return f"use {cidr}"


# --- tables named in the configuration, and stale compiled files ---------------------------

def table_specs(value: str) -> Iterator[str]:
    """The `type:name` tables in a list value: `proxy:` removed, unionmap/pipemap members
    included, and only names whose type is a table type (not `inet:host:port`)."""
    for item in split_list(value):
        spec = item.lstrip("!")
        while spec.lower().startswith("proxy:"):
            spec = spec[len("proxy:"):]
        kind, colon, name = spec.partition(":")
        if not colon or kind.lower() not in TABLE_TYPES:
            continue
        kind = kind.lower()
        inner = name.strip()
        if kind in ("unionmap", "pipemap") and inner.startswith("{") and inner.endswith("}"):
            yield from table_specs(inner[1:-1])
        else:
            yield f"{kind}:{name}"


def named_tables(cfg: Config) -> list[tuple[str, str, str]]:
    """(spec, parameter, origin) of every table in a value set in main.cf or by a master.cf
    `-o`, first naming first; the databases Postfix's daemons write are left out."""
    seen: set[str] = set()
    out = []
    for name, raw, origin in _settings(cfg):
        if _CACHE_PARAMETER.match(name):
            continue
        try:
            value = cfg.expand_text(raw)
        except ConfigError:
            continue
        for spec in table_specs(value):
            if spec not in seen:
                seen.add(spec)
                out.append((spec, name, origin))
    return out


def _settings(cfg: Config) -> list[tuple[str, str, str]]:
    """(name, raw value, origin) of main.cf's settings and master.cf's `-o` settings."""
    out = [(name, entry.value, entry.origin) for name, entry in cfg.explicit.items()]
    try:
        master = load_master_cf(cfg.config_dir) if cfg.config_dir else None
    except ConfigError:
        master = None
    for entry in master.entries if master is not None else ():
        out += [(name, value, entry.origin) for name, value in entry.overrides]
    return out


def compiled_path(spec: str) -> tuple[str, str] | None:
    """(source, compiled file) of a hash:/btree:/lmdb: table, None for other types."""
    kind, _, name = spec.partition(":")
    suffix = SUFFIX.get(kind.lower())
    if suffix is None or name.strip().startswith("{"):
        return None
    return name, name + suffix


def stale_table(spec: str) -> str | None:
    """Postfix's warning when the compiled file of `spec` is older than its source
    (dict_db.c: `database FILE.db is older than source file FILE`), else None."""
    paths = compiled_path(spec)
    if paths is None:
        return None
    source, compiled = paths
    try:
        newer = os.stat(source).st_mtime_ns > os.stat(compiled).st_mtime_ns
    except OSError:
        return None
    return f"database {compiled} is older than source file {source}" if newer else None


def stale_tables(cfg: Config) -> list[str]:
    """stale_table() for every compiled table the configuration names (main.cf and the
    master.cf `-o` settings): what `mailgate serve` warns about at start-up and reload."""
    found = (stale_table(spec) for spec, _, _ in named_tables(cfg))
    return [text for text in found if text is not None]
