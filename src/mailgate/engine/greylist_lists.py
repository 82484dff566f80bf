"""postgrey's allowlist files, read unchanged: whitelist_clients and whitelist_recipients."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mailgate.maps.regex_engines import PCRE2_CASELESS, Compiled, RegexError, pcre_compiler

Warn = Callable[[str], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SPACE = " \t\n\r\f\v"  # Perl's \s
_REGEX = re.compile(r"/(\S+)/")  # postgrey: /^\/(\S+)\/$/
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:/[0-9]{1,2})?")
_IPV4_24 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV4_16 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")
_IPV6 = re.compile(r".*:.*:.*")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class ClientAllowlist:
    """Clients that are never greylisted: by verified name (a name, the names below a
    domain, or a /regex/) or by address (an address, `a.b.c` and `a.b` prefixes, a network
    `addr/len`, IPv4 or IPv6)."""

    names: tuple[Compiled, ...] = ()
    networks: tuple[Network, ...] = ()

    def match(self, name: str, addr: str) -> bool:
        """True when the client's name (Postfix's client_name, `unknown` without a
        verified name) or its address is listed."""
        key = name.encode("utf-8", "surrogateescape")
        if any(pattern.test(key) for pattern in self.names):
            return True
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class RecipientAllowlist:
    """Recipients that are never greylisted: `user@domain`, `user@` (with or without an
    address extension `+ext`), `domain` (and its subdomains), or a /regex/."""

    patterns: tuple[Compiled, ...] = ()

    def match(self, recipient: str) -> bool:
        key = recipient.encode("utf-8", "surrogateescape")
        return any(pattern.test(key) for pattern in self.patterns)


def _lines(paths: Iterable[str], warn: Warn) -> Iterator[tuple[str, int, str]]:
    """(file, line number, text) of each line that is not empty once postgrey has cut its
    comment (`#` to the end) and white space; a file that cannot be read is warned about
    (but not a missing `*.local` file: postgrey's optional local additions)."""
    for path in paths:
        try:
            with open(path, "rb") as stream:
                raw = stream.read()
        except OSError as exc:
            if not path.endswith(".local"):
                warn(f"cannot open {path}: {exc.strerror}")
            continue
        text = raw.decode("utf-8", "surrogateescape")
        for number, line in enumerate(text.split("\n"), 1):
            line = line.split("#", 1)[0].strip(_SPACE)
            if line:
                yield path, number, line


def _compile(pattern: str, path: str, number: int, warn: Warn) -> Compiled | None:
    """A pattern as Perl's `qr{...}i` (PCRE2, caseless, on the UTF-8 bytes)."""
    try:
        return pcre_compiler()(pattern.encode("utf-8", "surrogateescape"), PCRE2_CASELESS)
    except RegexError as exc:
        warn(f"{path}, line {number}: bad regular expression /{pattern}/: {exc.message}; "
             "skipping this line")
        return None


def _network(text: str, prefix: int | None) -> Network | None:
    try:
        if prefix is not None:
            octets = text.split(".")
            text = ".".join(octets + ["0"] * (4 - len(octets))) + f"/{prefix}"
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _client_network(line: str) -> Network | str | None:
    """The network an address line means; "" when the line is no address form (a name)."""
    if _IPV4.fullmatch(line):
        return _network(line, None)
    if _IPV4_24.fullmatch(line):
        return _network(line, 24)
    if _IPV4_16.fullmatch(line):
        return _network(line, 16)
    if _IPV6.fullmatch(line):
        return _network(line, None)
    return ""


def read_clients(paths: Iterable[str], warn: Warn) -> ClientAllowlist:
    """greylist_allowlist_clients: postgrey's whitelist_clients files (read_clients_whitelists
    of postgrey 1.37), in its order of tests; a bad line is warned about with file and line
    and skipped."""
    names: list[Compiled] = []
    networks: list[Network] = []
    for path, number, line in _lines(paths, warn):
        regex = _REGEX.fullmatch(line)
        if regex:
            compiled = _compile(regex.group(1), path, number, warn)
            if compiled is not None:
                names.append(compiled)
            continue
        net = _client_network(line)
        if isinstance(net, str):
            if not _WORD.fullmatch(line):
                warn(f"{path}, line {number}: doesn't look like a hostname: {line}")
                continue
            compiled = _compile(f"(?:^|\\.){re.escape(line)}$", path, number, warn)
            if compiled is not None:
                names.append(compiled)
        elif net is None:
            warn(f"{path}, line {number}: doesn't look like an address or network: {line}")
        else:
            networks.append(net)
    return ClientAllowlist(tuple(names), tuple(networks))


def read_recipients(paths: Iterable[str], warn: Warn) -> RecipientAllowlist:
    """greylist_allowlist_recipients: postgrey's whitelist_recipients files
    (read_recipients_whitelists of postgrey 1.37); a bad line is warned about and skipped."""
    patterns: list[Compiled] = []
    for path, number, line in _lines(paths, warn):
        regex = _REGEX.fullmatch(line)
        if regex:
            pattern = regex.group(1)
        elif not _WORD.fullmatch(line):
            warn(f"{path}, line {number}: doesn't look like an address: {line}")
            continue
        elif "@" in line:
            user, domain = line.split("@", 1)
            pattern = f"^{re.escape(user)}(?:\\+[^@]+)?@"
            if domain:
                pattern += f"{re.escape(domain)}$"
        else:
            pattern = f"(?:@|\\.){re.escape(line)}$"
        compiled = _compile(pattern, path, number, warn)
        if compiled is not None:
            patterns.append(compiled)
    return RecipientAllowlist(tuple(patterns))
