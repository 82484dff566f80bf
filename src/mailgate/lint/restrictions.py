"""Restriction list checks: unknown names, entries never reached or never able to act, and
restrictions the field knows to hurt."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType

from mailgate.engine import engine as _registration  # noqa: F401  (fills REGISTRY)
from mailgate.engine.evaluate import REGISTRY
from mailgate.lint.findings import Finding
from mailgate.lint.lists import (
    DOMAIN_ARGUMENT,
    NUMBER_ARGUMENT,
    SERVICE_ARGUMENT,
    RestrictionList,
    Step,
    takes_argument,
)
from mailgate.lint.relay import known_inputs

_HELO = frozenset({
    "check_helo_access", "check_helo_a_access", "check_helo_mx_access", "check_helo_ns_access",
    "reject_invalid_helo_hostname", "reject_invalid_hostname", "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname", "reject_unknown_helo_hostname", "reject_unknown_hostname",
    "reject_rhsbl_helo", "permit_naked_ip_address"})
_SENDER = frozenset({
    "check_sender_access", "check_sender_a_access", "check_sender_mx_access",
    "check_sender_ns_access", "reject_non_fqdn_sender", "reject_unknown_sender_domain",
    "reject_unknown_address", "reject_rhsbl_sender", "reject_unlisted_sender",
    "reject_sender_login_mismatch", "reject_known_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch"})
_RECIPIENT = frozenset({
    "check_recipient_access", "check_recipient_a_access", "check_recipient_mx_access",
    "check_recipient_ns_access", "reject_non_fqdn_recipient", "reject_unknown_recipient_domain",
    "reject_unlisted_recipient", "check_recipient_maps", "reject_rhsbl_recipient",
    "reject_unauth_destination", "defer_unauth_destination", "permit_auth_destination",
    "permit_mx_backup", "check_relay_domains"})
_NEEDS = (("helo", _HELO, "a HELO name"), ("sender", _SENDER, "a sender"),
          ("recipient", _RECIPIENT, "a recipient"))
_RUNS_AT = MappingProxyType({"client": "at connect", "helo": "at HELO",
                             "sender": "at MAIL FROM", "etrn": "at ETRN"})
_NOT_MAILGATE = frozenset({"reject_unverified_sender", "reject_unverified_recipient",
                           "check_sasl_access"})
_REMOVED = MappingProxyType({  # removed from Postfix 3.9, with what to use instead
    "check_relay_domains": "reject_unauth_destination",
    "reject_maps_rbl": "reject_rbl_client DOMAIN",
    "permit_naked_ip_address": "permit_mynetworks or permit_sasl_authenticated"})
_WIDE_LISTS = ("dnsbl-2.uceprotect.net", "dnsbl-3.uceprotect.net")


@dataclass(frozen=True)
class ListContext:
    """The settings the list checks depend on."""

    classes: frozenset[str]
    delay_reject: bool
    helo_required: bool
    mx_backup_networks: bool


def check_lists(lists: list[RestrictionList], ctx: ListContext) -> Iterator[Finding]:
    for rl in lists:
        yield from _unknown(rl, ctx)
        yield from _unreachable(rl)
        yield from _never_acts(rl, ctx)
        for step in rl.steps:
            yield from _risky(rl, step, ctx)


def _unknown(rl: RestrictionList, ctx: ListContext) -> Iterator[Finding]:
    """Names the engine does not know, missing arguments, bare tables where none may be:
    the engine answers `451 4.3.5 Server configuration error` to everything the list checks."""
    effect = "every command this list checks gets 451 4.3.5 Server configuration error"
    for step in rl.steps:
        if step.bare and rl.bare_acl is None:
            yield Finding(rl.where, "unknown-restriction", f"the table {step.written} without "
                          f"a check_*_access in front is not allowed in {rl.param}: {effect}",
                          "name the check, e.g. check_sender_access " + step.written)
        elif step.bare:
            continue
        elif takes_argument(step.name) and step.arg is None:
            yield Finding(rl.where, "unknown-restriction", f"`{step.written}` in {rl.param} "
                          f"needs {_argument(step.name)} after it: {effect}",
                          f"write `{step.written} {_example(step.name)}`")
        elif step.name not in REGISTRY and step.name not in ctx.classes:
            yield Finding(rl.where, "unknown-restriction", f"unknown restriction "
                          f"`{step.written}` in {rl.param}: {effect}", _spelling(step, ctx))
            if step.written.startswith("#"):
                return  # the rest of the line is the comment


def _argument(name: str) -> str:
    if name in DOMAIN_ARGUMENT:
        return "a DNS list domain"
    if name in SERVICE_ARGUMENT:
        return "a transport:server"
    if name in NUMBER_ARGUMENT:
        return "a number of seconds"
    return "a type:table"


def _example(name: str) -> str:
    if name in DOMAIN_ARGUMENT:
        return "zen.spamhaus.org"
    if name in SERVICE_ARGUMENT:
        return "inet:127.0.0.1:10023"
    if name in NUMBER_ARGUMENT:
        return "1"
    return "hash:/etc/mailgate/access"


def _spelling(step: Step, ctx: ListContext) -> str:
    if step.written.startswith("#"):
        return ("`#` starts a comment only at the beginning of a line: put the comment on a "
                "line of its own")
    if step.name in _NOT_MAILGATE:
        return f"mailgate does not implement Postfix's {step.name}: remove it"
    close = difflib.get_close_matches(step.name, [*REGISTRY, *ctx.classes], n=1, cutoff=0.8)
    if close:
        return f"did you mean `{close[0]}`?"
    return "check the spelling, or define it as a class in smtpd_restriction_classes"


def _unreachable(rl: RestrictionList) -> Iterator[Finding]:
    """Restrictions after `permit`, `reject` or `defer` (which always decide), and a
    warn_if_reject at the end of the list."""
    for i, step in enumerate(rl.steps[:-1]):
        if step.name == "permit" or (step.name in ("reject", "defer") and not step.warned):
            rest = rl.steps[i + 1:]
            more = f" and {len(rest) - 1} more" if len(rest) > 1 else ""
            yield Finding(rl.where, "unreachable-restriction",
                          f"`{rest[0].text()}`{more} in {rl.param} never run: "
                          f"`{step.text()}` before them always decides",
                          f"move them before `{step.text()}`, or remove them")
            break
    if rl.trailing_warn:
        yield Finding(rl.where, "unreachable-restriction", f"warn_if_reject at the end of "
                      f"{rl.param} applies to nothing", "put the restriction it is for after "
                      "it, or remove it")


def _never_acts(rl: RestrictionList, ctx: ListContext) -> Iterator[Finding]:
    """Restrictions that need a HELO name, sender or recipient in a list that runs before
    there is one (smtpd_delay_reject = no), or in smtpd_etrn_restrictions."""
    stage = rl.stage
    if stage is None or stage not in _RUNS_AT or (ctx.delay_reject and stage != "etrn"):
        return
    etrn = stage == "etrn"
    known = frozenset({"helo"}) if etrn else known_inputs(stage, ctx.delay_reject)
    why = "it runs" if etrn else "with smtpd_delay_reject = no it runs"
    fix = "remove it: ETRN names a domain, nothing else" if etrn else \
        "move it to smtpd_recipient_restrictions, or set smtpd_delay_reject = yes"
    for step in rl.steps:
        for needed, names, what in _NEEDS:
            if step.name in names and needed not in known:
                yield Finding(rl.where, "unreachable-restriction",
                              f"`{step.text()}` in {rl.param} can never act: {why} "
                              f"{_RUNS_AT[stage]}, where there is no {what[2:]}", fix)


def _risky(rl: RestrictionList, step: Step, ctx: ListContext) -> Iterator[Finding]:
    name, where = step.name, rl.where
    if name in ("reject_unknown_client_hostname", "reject_unknown_client") and not step.warned:
        yield Finding(where, "risky-restriction", f"`{step.written}` in {rl.param} refuses "
                      "every client whose address has no name that resolves back to it; many "
                      "legitimate servers fail that and their mail is refused",
                      "use reject_unknown_reverse_client_hostname (a PTR record is enough), or "
                      "put warn_if_reject before it and read the reject_warning lines first")
    elif name in ("reject_unknown_helo_hostname", "reject_unknown_hostname") and \
            not ctx.helo_required:
        yield Finding(where, "risky-restriction", f"`{step.written}` in {rl.param} without "
                      "smtpd_helo_required = yes: a client that sends no HELO skips it, while "
                      "legitimate servers whose HELO name has no DNS record are refused",
                      "set smtpd_helo_required = yes, and consider warn_if_reject before it")
    elif name == "permit_mx_backup" and not ctx.mx_backup_networks:
        yield Finding(where, "risky-restriction", f"`permit_mx_backup` in {rl.param} relays "
                      "for any domain whose MX records name this host, which anyone can set up",
                      "set permit_mx_backup_networks to the primary MX hosts' networks, or "
                      "list the domains in relay_domains instead")
    elif name == "permit_tls_all_clientcerts":
        yield Finding(where, "risky-restriction", f"`permit_tls_all_clientcerts` in "
                      f"{rl.param} accepts any client with a certificate a trusted CA signed; "
                      "anyone can buy one", "use permit_tls_clientcerts with relay_clientcerts")
    elif name in _REMOVED:
        yield Finding(where, "risky-restriction", f"`{step.written}` in {rl.param} is removed "
                      "in Postfix 3.9: the same main.cf will not work there",
                      f"use {_REMOVED[name]}")
    elif name in ("reject_rbl_client", "reject_rbl") and step.arg in _WIDE_LISTS and \
            not step.warned:
        yield Finding(where, "risky-restriction", f"`{step.text()}` in {rl.param} lists whole "
                      "provider networks: legitimate servers that share one with a spammer "
                      "are refused", "use dnsbl-1.uceprotect.net, or give the list a weight "
                      "in smtpd_dnsbl_sites and use reject_dnsbl_score")
