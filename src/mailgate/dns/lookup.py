"""Postfix's dns_lookup layer over the resolver: the reply filter (smtpd_dns_reply_filter),
null MX detection, the `why` texts, and multi-type lookups with Postfix's status precedence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.dns.rbl import RblCache
from mailgate.dns.resolver import (
    HOST_NOT_FOUND,
    INVAL,
    NOTFOUND,
    NULLMX,
    OK,
    POLICY,
    RETRY,
    Record,
    Resolver,
)
from mailgate.errors import MapError
from mailgate.maps.base import Map
from mailgate.smtp.hostnames import valid_hostaddr, valid_hostname

# dns_lookup_l() flags
STOP_OK, STOP_INVAL, STOP_NULLMX, STOP_MX_POLICY = 1, 2, 4, 8

HEDGE = 0.25  # seconds before the other types of a multi-type lookup are asked too
_FILTER_DROPS = "DNS reply filter drops all results"
_FILTER_SYNTAX = "Invalid DNS reply filter syntax"


@dataclass(frozen=True, slots=True)
class Result:
    status: int
    records: tuple[Record, ...] = ()
    why: str = ""  # the text Postfix puts in `why` for a failure
    error: str = ""  # dns_strerror() text (h_errno) for a failure


def lookup_name_ok(name: str) -> bool:
    """What dns_lookup_x() asks the DNS about: "." and valid host names (a whole first label
    `*` allowed, DO_WILDCARD), never a numeric address."""
    if name == ".":
        return True
    if valid_hostaddr(name):
        return False
    if name[:1] == "*" and name[1:2] in ("", "."):
        name = "x" + name[1:]
    return valid_hostname(name)


class DnsLookup:
    """One resolver, one optional reply filter, and the log for the filter's lines."""

    def __init__(self, resolver: Resolver, reply_filter: Map | None = None,
                 log: Callable[[str], None] = lambda text: None,
                 filter_title: str = "smtpd_dns_reply_filter") -> None:
        self.resolver = resolver
        self.reply_filter = reply_filter
        self.log = log
        self.filter_title = filter_title
        self.rbl_cache = RblCache()

    async def lookup(self, name: str, rdtype: str) -> Result:
        """dns_lookup() with a result list: the filter applies, a null MX is NULLMX. A name
        that is an address, or not a valid host name (a trailing dot, an empty or long label,
        a non-ASCII character), is not found without a query, as dns_lookup_x() does."""
        if not lookup_name_ok(name):
            return Result(NOTFOUND, why=f"Name service error for {name}: invalid host or "
                          "domain name", error=HOST_NOT_FOUND)
        answer = await self.resolver.query(name, rdtype)
        if answer.status != OK:
            why = (f"Host or domain name not found. Name service error for name={name} "
                   f"type={rdtype}: {answer.error}")
            return Result(answer.status, why=why, error=answer.error)
        records = answer.records
        if rdtype == "MX" and len(records) == 1 and records[0].data == "" \
                and records[0].pref == 0:
            return Result(NULLMX, why=f"Domain {name} does not accept mail (nullMX)",
                          error="")
        if self.reply_filter is not None:
            kept = self._filter(records)
            if kept is None:
                return Result(RETRY, why=f"Error looking up name={name} type={rdtype}: "
                              f"{_FILTER_SYNTAX}", error=_FILTER_SYNTAX)
            if not kept:
                return Result(POLICY, why=f"Error looking up name={name} type={rdtype}: "
                              f"{_FILTER_DROPS}", error=_FILTER_DROPS)
            records = kept
        return Result(OK, records)

    def _filter(self, records: tuple[Record, ...]) -> tuple[Record, ...] | None:
        """dns_rr_filter_execute(): IGNORE drops a record; anything else is an error."""
        table = self.reply_filter
        assert table is not None
        kept = []
        for record in records:
            text = record.text()
            try:
                action = table.lookup(text)
            except MapError:
                return None
            if action is None:
                kept.append(record)
                continue
            command = action.split(None, 1)[0].upper() if action.strip() else ""
            if command == "IGNORE":
                self.log(f"ignoring DNS RR: {text}")
                continue
            self.log(f'warning: {self.filter_title}: unknown DNS filter action: "{action}"')
            return None
        return tuple(kept)

    async def lookup_l(self, name: str, types: tuple[str, ...], flags: int) -> Result:
        """dns_lookup_l(): each type in turn; OK wins, then by Postfix's precedence
        (POLICY > RETRY > INVAL > FAIL > NULLMX > NOTFOUND). Answers are taken (and
        filtered, and logged) in Postfix's order."""
        if not lookup_name_ok(name):  # no query for any type
            return await self.lookup(name, types[-1])
        first = self.resolver.start(name, types[0])
        if len(types) > 1 and not first.done():
            # hedged: if the first type is not answered within HEDGE, ask for the others at
            # once, so that a dead server costs one deadline, not one per type
            try:
                async with asyncio.timeout(HEDGE):
                    await asyncio.shield(first)
            except TimeoutError:
                for rdtype in types[1:]:
                    self.resolver.prefetch(name, rdtype)
        best: Result | None = None
        found: list[Record] = []
        result = Result(NOTFOUND)
        for index, rdtype in enumerate(types):
            result = await self.lookup(name, rdtype)
            found.extend(result.records)
            status = result.status
            if status == OK and flags & STOP_OK:
                break
            if status == INVAL and flags & STOP_INVAL:
                break
            if status == POLICY and rdtype == "MX" and flags & STOP_MX_POLICY:
                break
            if status == NULLMX and flags & STOP_NULLMX:
                break
            if index == len(types) - 1:
                break
            if best is None or status >= best.status:
                best = result
        if best is not None and result.status < best.status:
            result = best
        if found and result.status == OK:
            return Result(OK, tuple(found))
        return result
