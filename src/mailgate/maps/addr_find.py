"""Postfix's mail_addr_find(): address lookups with a strategy, in internal or external form.

Strategy flags: `full` (the address), `noext` (without `+extension`), `localpart_if_local`
(the bare local part, for local domains), `localpart_at_if_local` / `localpart_at`
(`user@`; the latter after the domain), `domain` (the bare domain) or `at_domain` (`@domain`),
`pdms` / `pddms` (parent domains as `parent` / `.parent`). Keys are queried in `external`
(RFC 5321 quoted local part), `internal` (unquoted) or `external-first` form.
(Vectors: shared/postfix/tests/global/mail_addr_find.*.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mailgate.maps.base import Map
from mailgate.smtp.tokens import quote_local_part

DEFAULT = frozenset({"full", "noext", "localpart_if_local", "at_domain"})


def split_extension(local: str, delimiters: str) -> tuple[str, str]:
    """`user+ext` → (`user`, `+ext`): cut at the first delimiter character after position 0."""
    if not delimiters:
        return local, ""
    cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
    return (local[:cut], local[cut:]) if cut > 0 else (local, "")


def unquote_local_part(address: str) -> str:
    """`"a b"@c` → `a b@c` (Postfix unquote_822_local)."""
    local, at, domain = address.rpartition("@") if "@" in address else (address, "", "")
    if address.startswith('"'):
        close = address.find('"', 1)
        while close > 0 and address[close - 1] == "\\":
            close = address.find('"', close + 1)
        if close > 0:
            inner = address[1:close].replace('\\"', '"').replace("\\\\", "\\")
            return inner + address[close + 1 :]
    return f"{local}@{domain}" if at else local


def _forms(key: str, query: str, bare_local: bool) -> list[str]:
    """The query forms of an internal-form key (domains and `@domain` are never quoted)."""
    if query == "internal" or key.startswith("@") or ("@" not in key and not bare_local):
        return [key]
    if bare_local:
        external = quote_local_part(key + "@x")[:-2]
    elif key.endswith("@") and key.count("@") >= 1:
        external = quote_local_part(key + "x")[:-1]
    else:
        external = quote_local_part(key)
    if query == "external":
        return [external]
    return [external] if external == key else [external, key]


def find(table: Map, address: str, strategy: frozenset[str], query: str = "external",
         delimiter: str = "+", is_local: Callable[[str], bool] = lambda d: False
         ) -> tuple[str | None, str]:
    """Return (result, extension) for an internal-form address; ('', '') parts when absent."""
    for form, ext in lookup_keys(table.fixed, address, strategy, query, delimiter, is_local):
        value = table.lookup(form)
        if value is not None:
            return value, ext
    return None, ""


def lookup_keys(fixed: bool, address: str, strategy: frozenset[str], query: str = "external",
                delimiter: str = "+", is_local: Callable[[str], bool] = lambda d: False
                ) -> Iterator[tuple[str, str]]:
    """The keys mail_addr_find() tries, in order, with the extension each one drops."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    local, ext = split_extension(local, delimiter)
    keys: list[tuple[str, bool, bool]] = []  # key, is bare local part, uses the extension
    if "full" in strategy:
        keys.append((f"{local}{ext}@{domain}" if at else local + ext, False, False))
    if ext and "noext" in strategy:
        keys.append((f"{local}@{domain}" if at else local, False, True))
    local_domain = bool(domain) and is_local(domain)
    if local_domain and "localpart_if_local" in strategy:
        keys.append((local + ext, True, False))
        if ext and "noext" in strategy:
            keys.append((local, True, True))
    if local_domain and "localpart_at_if_local" in strategy:
        keys += _at_keys(local, ext, strategy)
    if domain:
        keys += [(k, False, False) for k in _domain_keys(domain, strategy)]
    if "localpart_at" in strategy:
        keys += _at_keys(local, ext, strategy)
    if not fixed:  # pattern tables see the full address only
        keys = keys[:1]
    for key, bare, used_noext in keys:
        for form in _forms(key, query, bare):
            yield form, ext if (used_noext or bare or key.endswith("@")) and ext else ""


def _at_keys(local: str, ext: str, strategy: frozenset[str]) -> list[tuple[str, bool, bool]]:
    out = [(f"{local}{ext}@", False, False)]
    if ext and "noext" in strategy:
        out.append((f"{local}@", False, True))
    return out


def _domain_keys(domain: str, strategy: frozenset[str]) -> Iterator[str]:
    if "domain" in strategy:
        yield domain
    if "at_domain" in strategy:
        yield "@" + domain
    name = domain
    while "." in name and ("pdms" in strategy or "pddms" in strategy):
        name = name.split(".", 1)[1]
        yield ("." + name) if "pddms" in strategy else name
