"""What a replayed check may not use: facts the record lacks, DNS answers it did not record,
policy servers and greylisting state. Each ends the evaluation with NotEvaluable.

The guards wrap the restriction registry's functions (REGISTRY, by Postfix name) in the
replay process only; a check of a live session never meets them (decision 0067).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailgate.dns.resolver import RETRY, TRY_AGAIN, Answer, Resolver
from mailgate.engine import engine as _engine  # noqa: F401  (the restrictions, registered)
from mailgate.engine.context import CheckState
from mailgate.engine.evaluate import REGISTRY, Args, Evaluation, Frame, Restriction, Result
from mailgate.journal.parts import Answers
from mailgate.journal.record import decode_answer

MISSING_HELO = "[missing]"  # the HELO name of a transaction whose log does not show it


class NotEvaluable(Exception):
    """A check needs what the record does not hold (the text says what)."""


def reason_kind(reason: str) -> str:
    """A reason without its particulars, for counting (`DNS A 2.0.0.127.list was not
    recorded` → `DNS A answers not recorded`)."""
    if reason.startswith("DNS "):
        return f"DNS {reason.split()[1]} answers not recorded (--live-dns asks now)"
    return reason


@dataclass
class ReplayState(CheckState):
    """The session state of a replayed transaction, with what its record lacks."""

    missing: frozenset[str] = frozenset()


# The facts a restriction reads that a record may lack (a Postfix log: no HELO name of an
# accepted message, no name lookup status for an `unknown` client, no TLS details).
READS: dict[str, tuple[str, ...]] = {
    "helo": ("check_helo_access", "check_helo_a_access", "check_helo_mx_access",
             "check_helo_ns_access", "reject_invalid_helo_hostname", "reject_invalid_hostname",
             "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname",
             "reject_unknown_helo_hostname", "reject_unknown_hostname", "reject_rhsbl_helo"),
    "client_name_status": ("reject_unknown_client_hostname", "reject_unknown_client",
                           "reject_unknown_reverse_client_hostname",
                           "check_reverse_client_hostname_access",
                           "check_reverse_client_hostname_a_access",
                           "check_reverse_client_hostname_mx_access",
                           "check_reverse_client_hostname_ns_access",
                           "reject_rhsbl_reverse_client"),
    "tls": ("permit_tls_clientcerts", "permit_tls_all_clientcerts", "check_ccert_access",
            "reject_plaintext_session"),
    # (a journal: the candidate answers HELO/EHLO otherwise, so ESMTP may differ: simulate)
    "pipelining": ("reject_unauth_pipelining",),
}
WHAT = {"helo": "the HELO name", "client_name_status": "the client name lookup's result",
        "tls": "the TLS session",
        "pipelining": "whether the client's pipelining was improper with the candidate's "
                      "answer to HELO/EHLO"}
# Restrictions a replay never runs: another server's answer, or state that the replay
# would read in another moment (or change).
NEVER = {"check_policy_service": "asks a policy server",
         "check_greylist": "depends on greylisting state"}


def _guard(name: str, func: Restriction, fact: str) -> Restriction:
    def guarded(ev: Evaluation, frame: Frame, args: Args) -> Result:
        st = ev.st
        if isinstance(st, ReplayState) and fact in st.missing:
            raise NotEvaluable(f"{name} needs {WHAT[fact]}, which the record lacks")
        return func(ev, frame, args)

    guarded.replay_guard = True  # type: ignore[attr-defined]
    return guarded


def _never(name: str, func: Restriction, why: str) -> Restriction:
    def refused(ev: Evaluation, frame: Frame, args: Args) -> Result:
        if isinstance(ev.st, ReplayState):
            raise NotEvaluable(f"{name} {why}")
        return func(ev, frame, args)  # (a check outside a replay, in the same process)

    refused.replay_guard = True  # type: ignore[attr-defined]
    return refused


def install() -> None:
    """Wrap the registry's functions (once per process)."""
    for fact, names in READS.items():
        for name in names:
            func = REGISTRY.get(name)
            if func is not None and not getattr(func, "replay_guard", False):
                REGISTRY[name] = _guard(name, func, fact)
    for name, why in NEVER.items():
        func = REGISTRY.get(name)
        if func is not None and not getattr(func, "replay_guard", False):
            REGISTRY[name] = _never(name, func, why)


class RecordedResolver(Resolver):
    """Answers with the DNS answers recorded with the transaction (`use()`, before each
    one); a question not recorded makes the check NotEvaluable."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1",))  # never asked
        self.answers: dict[tuple[str, str], Answer] = {}
        self.raw: Answers = {}  # answers as the record has them

    def use(self, answers: dict[tuple[str, str], Answer], raw: Answers | None = None) -> None:
        """The answers of the next transaction: made, or (`raw`) made when asked for."""
        self.answers = answers
        self.raw = raw or {}

    def _answer(self, name: str, rdtype: str) -> Answer | None:
        key = (name, rdtype)
        found = self.answers.get(key)
        if found is None:
            item = self.raw.get(key)
            if item is not None:
                found = self.answers[key] = decode_answer(item)
        return found

    def cached(self, name: str, rdtype: str) -> Answer | None:
        return self._answer(name, rdtype)

    async def query(self, name: str, rdtype: str) -> Answer:
        answer = self._answer(name, rdtype)
        if answer is None:
            raise NotEvaluable(f"DNS {rdtype} {name} was not recorded (--live-dns asks now)")
        return answer

    def start(self, name: str, rdtype: str) -> asyncio.Future[Answer]:
        done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        done.set_result(self._answer(name, rdtype) or Answer(RETRY, error=TRY_AGAIN))
        return done  # (query() says whether it was recorded)

    def prefetch(self, name: str, rdtype: str = "A") -> None:
        pass
