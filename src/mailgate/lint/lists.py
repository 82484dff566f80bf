"""Restriction lists as lint reads them: each restriction with its argument, and where it is set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from mailgate.app.wiring import restriction_lists
from mailgate.config.config import Config
from mailgate.engine.settings import LIST_PARAMS
from mailgate.engine.stages import CLIENT, ETRN, HELO, MAIL, RCPT
from mailgate.lint.findings import Where, parse_origin

# Restrictions that take the next list element as their argument (smtpd_check.c).
TABLE_ARGUMENT = re.compile(r"check_[a-z_]+_access")
DOMAIN_ARGUMENT = frozenset({
    "reject_rbl_client", "reject_rbl", "reject_rhsbl_client", "reject_rhsbl_reverse_client",
    "reject_rhsbl_sender", "reject_rhsbl_helo", "reject_rhsbl_recipient",
    "permit_dnswl_client", "permit_rhswl_client"})
SERVICE_ARGUMENT = frozenset({"check_policy_service"})
NUMBER_ARGUMENT = frozenset({"sleep"})
# The check_*_access a bare `type:table` means in each stage list (None: not allowed).
STAGE_ACL: MappingProxyType[str, str | None] = MappingProxyType({
    "client": CLIENT.acl, "helo": HELO.acl, "sender": MAIL.acl, "relay": RCPT.acl,
    "recipient": RCPT.acl, "etrn": ETRN.acl, "data": None, "eod": None})
_STAGES = MappingProxyType({param: stage for stage, param in LIST_PARAMS.items()})


@dataclass(frozen=True)
class Subject:
    """One configuration the server runs: main.cf, or main.cf with one master.cf smtpd
    service's `-o` settings (`service` names it)."""

    cfg: Config
    main_cf: str  # where a parameter at its default is reported (line 0)
    service: str | None = None

    def where(self, name: str) -> Where:
        return parse_origin(self.cfg.origin(name), self.main_cf)


@dataclass(frozen=True, slots=True)
class Step:
    """One restriction of a list: its lower-case name (for a bare `type:table`, the stage's
    check_*_access), the name as written, its argument and whether warn_if_reject is on."""

    name: str
    written: str
    arg: str | None = None
    warned: bool = False
    bare: bool = False  # a `type:table` without check_*_access in front

    def text(self) -> str:
        """The restriction as written, with its argument."""
        if self.bare:
            return self.written
        return f"{self.written} {self.arg}" if self.arg is not None else self.written


@dataclass(frozen=True)
class RestrictionList:
    """A stage list, a restriction class or policyd_restrictions, and where it is set."""

    param: str
    stage: str | None  # client, helo, sender, relay, recipient, data, eod, etrn; None: other
    where: Where
    steps: tuple[Step, ...]
    trailing_warn: bool = False  # ends with a warn_if_reject that applies to nothing
    bare_acl: str | None = ""  # what a bare table means (None: not allowed; "": depends)


def takes_argument(name: str) -> bool:
    return bool(TABLE_ARGUMENT.fullmatch(name)) or name in DOMAIN_ARGUMENT or \
        name in SERVICE_ARGUMENT or name in NUMBER_ARGUMENT


def parse_steps(tokens: tuple[str, ...], acl: str | None) -> tuple[tuple[Step, ...], bool]:
    """The restrictions of a list as the engine walks it (evaluate.py): an argument is taken
    only when the engine would take it; also whether a warn_if_reject is left over."""
    steps: list[Step] = []
    warned = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token.lower()
        i += 1
        if name == "warn_if_reject":
            warned = True
            continue
        if ":" in token:
            steps.append(Step(acl or "", token, token, warned, bare=True))
        elif takes_argument(name):
            arg = tokens[i] if i < len(tokens) else None
            if arg is not None and _accepts(name, arg):
                i += 1
            else:
                arg = None
            steps.append(Step(name, token, arg, warned))
        else:
            steps.append(Step(name, token, None, warned))
        warned = False
    return tuple(steps), warned


def _accepts(name: str, arg: str) -> bool:
    if name in NUMBER_ARGUMENT:
        return arg.isdigit()
    if name in DOMAIN_ARGUMENT:
        return True
    return ":" in arg


def restriction_lists_of(subject: Subject) -> list[RestrictionList]:
    """The stage lists and restriction classes of a configuration (app.wiring's
    restriction_lists), and policyd_restrictions when main.cf sets it."""
    cfg = subject.cfg
    lists = dict(restriction_lists(cfg))
    if cfg.is_set("policyd_restrictions"):
        lists["policyd_restrictions"] = cfg.get_list("policyd_restrictions")
    out = []
    for param, tokens in lists.items():
        stage = _STAGES.get(param)
        acl = STAGE_ACL[stage] if stage is not None else ""  # a class: where it is used
        steps, trailing = parse_steps(tokens, acl)
        out.append(RestrictionList(param, stage, subject.where(param), steps, trailing, acl))
    return out


def classes(cfg: Config) -> dict[str, tuple[str, ...]]:
    """smtpd_restriction_classes by lower-case name, with their restrictions."""
    return {name.lower(): cfg.get_list(name) for name in cfg.get_list("smtpd_restriction_classes")
            if cfg.raw(name) is not None}
