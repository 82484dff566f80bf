"""Address resolution for smtpd's checks, made once per address per command (smtpd_resolve)."""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.addressing import AddressResolver, Resolved, fold_resolved
from mailgate.dns.idna import domain_to_ascii
from mailgate.maps.casefold import fold
from mailgate.smtp.hostnames import valid_utf8_hostname


@dataclass(frozen=True, slots=True)
class Resolution:
    """An address as smtpd's checks see it: `found` is smtpd_resolve_addr()'s form (the
    whole address case-folded); `domain` is the domain before folding, whose syntax
    smtpd_check_addr() tests."""

    found: Resolved
    domain: str


def resolve(resolver: AddressResolver, address: str, utf8: bool) -> Resolution:
    """smtpd_resolve_addr(): the resolved address case-folded as a whole (local part too,
    quoted parts too), with ICU case folding when smtputf8_enable is on (`Straße` →
    `strasse`), else A-Z only. Raises MapError on a table failure."""
    found = resolver.resolve(address)
    return Resolution(fold_resolved(found, utf8), found.domain)


def bad_address(resolution: Resolution, smtputf8: bool, utf8: bool) -> bool:
    """smtpd_check_addr(): the resolver finds the domain malformed (`user@`, `a@b%c`; a
    non-ASCII domain is checked in its IDNA form when smtputf8_enable (`utf8`) is on), or
    the client did not say SMTPUTF8 (`smtputf8`) and the case-folded domain is not ASCII
    (`straße` folds to `strasse` and passes, `é` does not)."""
    domain = resolution.domain
    if resolution.found.error and (domain.isascii() or not utf8
                                   or not valid_utf8_hostname(domain, domain_to_ascii)):
        return True
    return not smtputf8 and not domain.isascii() and not fold(domain, utf8).isascii()
