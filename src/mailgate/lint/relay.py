"""open-relay: can a client outside mynetworks, not authenticated, relay to a domain that is
not ours? Every list it meets is evaluated symbolically for such a client (docs/decisions/0060)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailgate.engine import engine as _registration  # noqa: F401  (fills REGISTRY)
from mailgate.engine.evaluate import REGISTRY
from mailgate.engine.settings import LIST_PARAMS, EngineSettings
from mailgate.errors import ConfigError
from mailgate.lint.findings import Finding, Where
from mailgate.lint.lists import (
    STAGE_ACL,
    TABLE_ARGUMENT,
    Step,
    Subject,
    classes,
    parse_steps,
    takes_argument,
)
from mailgate.lint.reach import Answer, Verdict, World, table_answer, world_networks
from mailgate.lint.tables import Tables

_ALL = frozenset({"helo", "sender", "recipient"})
_RELAY_LISTS = ("relay", "recipient")
_UNAUTH = frozenset({"reject_unauth_destination", "defer_unauth_destination"})
_BLOCKING = frozenset({"reject", "defer", "defer_if_permit"})
_MAX_DEPTH = 100  # restriction classes nest at most this deep (smtpd_check.c)


def known_inputs(stage: str, delay_reject: bool) -> frozenset[str]:
    """What a stage list sees of HELO name, sender and recipient when it decides: with
    smtpd_delay_reject = yes the client, helo and sender lists run again at RCPT. At DATA the
    client can avoid having one recipient (Postfix then checks none)."""
    if stage in _RELAY_LISTS or (delay_reject and stage in ("client", "helo", "sender")):
        return _ALL
    return {"client": frozenset(), "helo": frozenset({"helo"}),
            "sender": frozenset({"helo", "sender"})}.get(stage, frozenset({"helo", "sender"}))


@dataclass(frozen=True)
class Client:
    """The client the proof is about, and what it needs to know of the configuration."""

    version: int  # 4 or 6
    world: Mapping[int, World]
    classes: Mapping[str, tuple[str, ...]]
    tables: Tables
    helo_required: bool


@dataclass(frozen=True, slots=True)
class Through:
    """How the client gets through one list: the restriction that permits it (None: the
    list ends without deciding), why, and a later restriction of the list that would have
    refused it."""

    param: str
    where: Where
    step: Step | None = None
    why: str = ""
    world: World | None = None
    shadowed: str = ""


def _step(step: Step, client: Client, known: frozenset[str], acl: str | None,
          depth: int) -> tuple[Verdict, str, World | None]:
    """What one restriction gives the client at best, why, and the mynetworks pattern when
    that is the reason."""
    name = step.name
    world = client.world.get(client.version)
    verdict, why = Verdict.DUNNO, ""
    if name == "permit":
        verdict, why = Verdict.PERMIT, "`permit` accepts every client"
    elif name in _BLOCKING or (name in _UNAUTH and "recipient" in known):
        verdict = Verdict.BLOCK
    elif name in ("permit_mynetworks", "check_relay_domains") and world is not None:
        return Verdict.PERMIT, f"`{step.text()}` accepts clients in mynetworks", world
    elif name == "check_relay_domains" and "recipient" in known:
        verdict = Verdict.BLOCK
    elif name == "permit_naked_ip_address" and "helo" in known:
        verdict, why = Verdict.PERMIT, ("`permit_naked_ip_address` accepts any client that "
                                        "sends HELO with a bare address")
    elif name == "check_policy_service" or not name or (
            name not in REGISTRY and not step.bare and name not in client.classes) or (
            takes_argument(name) and step.arg is None):
        return Verdict.BLOCK, "", None  # may refuse (a policy server), or 451 (misused)
    elif step.arg is not None and (step.bare or TABLE_ARGUMENT.fullmatch(name)):
        answer = table_answer(name or (acl or ""), step.arg, client.tables, client.version,
                              known, client.helo_required)
        verdict, why = _answer(answer, step, client, known, acl, depth)
    elif name in client.classes and depth < _MAX_DEPTH:
        verdict, _, inner, world, _ = _walk(client.classes[name], client, known, acl,
                                            depth + 1)
        if verdict is Verdict.PERMIT:
            return verdict, f"the restriction class `{step.written}` accepts it: {inner}", world
    if verdict is Verdict.BLOCK and step.warned:
        verdict = Verdict.DUNNO  # warn_if_reject: logged, not refused
    return verdict, why, None


def _answer(answer: Answer, step: Step, client: Client, known: frozenset[str],
            acl: str | None, depth: int) -> tuple[Verdict, str]:
    result = answer.result
    if isinstance(result, tuple):
        if depth >= _MAX_DEPTH:
            return Verdict.BLOCK, ""
        result = _walk(result, client, known, acl, depth + 1)[0]
    return result, f"`{step.text()}` answers {answer.entry}, which any client can reach"


def _walk(tokens: tuple[str, ...], client: Client, known: frozenset[str], acl: str | None,
          depth: int = 0) -> tuple[Verdict, Step | None, str, World | None, str]:
    """A list for the client: the first restriction that decides, as generic_checks() runs
    it; (verdict, deciding step, why, mynetworks pattern, a later refusing restriction)."""
    steps, _ = parse_steps(tokens, acl)
    for i, step in enumerate(steps):
        verdict, why, world = _step(step, client, known, acl, depth)
        if verdict is Verdict.PERMIT:
            later = next((s.text() for s in steps[i + 1:]
                          if _step(s, client, known, acl, depth)[0] is Verdict.BLOCK), "")
            return verdict, step, why, world, later
        if verdict is Verdict.BLOCK:
            return verdict, step, why, world, ""
    return Verdict.DUNNO, None, "", None, ""


def _order(subject: Subject) -> list[str]:
    """The stage lists in the order a relayed message meets them."""
    first = ["relay", "recipient"]
    if not subject.cfg.get_bool("smtpd_relay_before_recipient_restrictions"):
        first.reverse()
    return ["client", "helo", "sender", *first, "data", "eod"]


def _versions(subject: Subject) -> list[int]:
    protocols = {p.lower() for p in subject.cfg.get_list("inet_protocols")}
    return [v for v in (4, 6) if not protocols or "all" in protocols or f"ipv{v}" in protocols]


def passes(subject: Subject, tables: Tables, version: int) -> list[Through] | None:
    """How an IPv`version` client gets through every list, or None when one refuses it."""
    cfg = subject.cfg
    client = Client(version, world_networks(subject, tables), classes(cfg), tables,
                    cfg.get_bool("smtpd_helo_required"))
    delay = cfg.get_bool("smtpd_delay_reject")
    out = []
    for stage in _order(subject):
        param = LIST_PARAMS[stage]
        verdict, step, why, world, later = _walk(cfg.get_list(param), client,
                                                 known_inputs(stage, delay), STAGE_ACL[stage])
        if verdict is Verdict.BLOCK:
            return None
        out.append(Through(param, subject.where(param), step, why, world, later))
    return out


def open_relay(subject: Subject, tables: Tables) -> Finding | None:
    """The open-relay finding for a configuration, blamed on what lets the client through:
    a permit before the relay check, a world-wide mynetworks, or the relay check missing."""
    for version in _versions(subject):
        through = passes(subject, tables, version)
        if through is not None:
            return _finding(subject, through)
    return None


def _finding(subject: Subject, through: list[Through]) -> Finding:
    head = "a client outside mynetworks, not authenticated, can relay mail to any domain"
    relay = [t for t in through if t.param in (LIST_PARAMS["relay"], LIST_PARAMS["recipient"])]
    ranked = [t for t in relay if t.step is not None and t.shadowed] + \
        [t for t in through if t.world is not None] + [t for t in relay if t.step is not None]
    if ranked:
        t = ranked[0]
        assert t.step is not None
        if t.world is not None:
            return Finding(t.world.where, "open-relay",
                           f"{head}: mynetworks includes {t.world.what}, and in {t.param}, "
                           f"{t.why}", "list only your own networks in mynetworks, "
                           "e.g. mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24")
        if t.shadowed:
            return Finding(t.where, "open-relay", f"{head}: in {t.param}, {t.why} before "
                           f"`{t.shadowed}` can refuse it", f"put `{t.shadowed}` before "
                           f"`{t.step.text()}`, or move `{t.step.text()}` after it")
        return Finding(t.where, "open-relay", f"{head}: in {t.param}, {t.why}, and no list "
                       f"refuses a recipient in a domain that is not ours{_refused(subject)}",
                       _REMEDY)
    where = subject.where(LIST_PARAMS["relay"])
    return Finding(where, "open-relay", f"{head}: neither smtpd_relay_restrictions nor "
                   f"smtpd_recipient_restrictions refuses a recipient in a domain that is not "
                   f"ours{_refused(subject)}", _REMEDY)


_REMEDY = ("smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
           "reject_unauth_destination")


def _refused(subject: Subject) -> str:
    try:
        EngineSettings.from_config(subject.cfg)
    except ConfigError as exc:
        if "specify at least one working instance" in str(exc):
            return " (mailgate serve refuses to start with it)"
    return ""
