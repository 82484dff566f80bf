"""One recorded transaction played again through an engine: the commands the client sent
(HELO, MAIL, each RCPT, DATA, end of data), checked as smtpd checks them, and per recipient
the reply that refuses it first, then and now.

A recipient's reply is the first refusal on its way: the connection (smtpd_delay_reject =
no), MAIL (smtpd_helo_required without an accepted HELO; the MAIL checks), its RCPT, then
DATA and the end of the message; 250 when nothing refuses it. The client is taken to send
what it sent then, whatever the answers (a refused HELO does not stop it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import Client
from mailgate.engine.engine import Engine
from mailgate.engine.reply import Rule, Verdict
from mailgate.journal.record import NEED_HELO, TOO_MANY, Outcome, Then, Transaction
from mailgate.maps.casefold import printable
from mailgate.replay.guards import MISSING_HELO, NotEvaluable, ReplayState
from mailgate.server.session_commands import neuter

ACCEPTED = Outcome(250)
POSTFIX_RECIPIENT_LIMIT = 1000  # smtpd_recipient_limit's default (taken as the log's)


@dataclass(frozen=True, slots=True)
class Now:
    """What the configuration answers one recipient now: the refusing reply (or 250) and
    where (connect, helo, mail, rcpt, data, end-of-data); or, when a check could not be
    evaluated, `reason`."""

    outcome: Outcome | None
    stage: str = ""
    reason: str = ""


def then_key(t: Then) -> tuple[bool, bool, bool]:
    """What a simulation reads of `then` (the rest is only reported): whether every RCPT was
    refused then and whether DATA was refused (or not reached) then, which say whether the
    client could send the message, and whether HELO was refused then (whether the session
    was ESMTP). An evaluation depends on the facts and these alone."""
    return (all(o.refused for o in t.rcpt), t.data is None or t.data.refused,
            t.helo is not None and t.helo.refused)


def then(tx: Transaction) -> list[Outcome]:
    """The reply each recipient got (a refused MAIL without recipients: one entry)."""
    return replies_then(tx.then, len(tx.recipients))


def replies_then(t: Then, recipients: int) -> list[Outcome]:
    """then() from a record's `then` and its number of recipients."""
    for first in (t.connect, t.mail):
        if first is not None and first.refused:
            return [first] * max(recipients, 1)
    message = t.data if t.data is not None and t.data.refused else \
        t.eod if t.eod is not None and t.eod.refused else None
    out = []
    for outcome in t.rcpt:
        out.append(message if message is not None and not outcome.refused else outcome)
    return out


class Simulation:
    """Plays transactions against one engine with one smtpd's settings."""

    def __init__(self, engine: Engine, settings: SmtpdSettings) -> None:
        self.engine = engine
        self.s = settings

    async def run(self, tx: Transaction) -> list[Now]:
        """The answer for each recipient (one for a transaction without recipients)."""
        count = max(len(tx.recipients), 1)
        out: list[Now] = []
        try:
            st = self._state(tx)
            refused = await self._before_rcpt(st, tx)
            if refused is not None:
                return [refused] * count
            if not tx.recipients:  # refused at MAIL then, recipients not known (a Postfix
                return [Now(ACCEPTED, "mail")]  # log; or the client tried none): the MAIL
            await self._recipients(st, tx, out)
        except NotEvaluable as exc:
            out += [Now(None, reason=str(exc))] * (count - len(out))
        return out

    def _state(self, tx: Transaction) -> ReplayState:
        client = Client.__new__(Client)  # a copy (copy.copy's effect, at a quarter of its cost)
        client.__dict__.update(tx.client.__dict__)
        st = ReplayState(client, protocol=tx.protocol, missing=tx.missing)
        st.encryption, st.ccert = tx.encryption, tx.ccert
        st.sasl_method, st.sasl_username = tx.sasl_method, tx.sasl_username
        return st

    async def _before_rcpt(self, st: ReplayState, tx: Transaction) -> Now | None:
        """Connect, HELO and MAIL: the refusal every recipient meets, or None."""
        s, engine = self.s, self.engine
        if not s.delay_reject:
            st.where = "CONNECT"
            verdict = await engine.check_client(st)
            if verdict.reply is not None:
                return _now(verdict, "connect")
        helo_refusal: Verdict | None = None
        helo = MISSING_HELO if "helo" in tx.missing else tx.helo
        if helo is not None:
            st.where = "EHLO" if tx.protocol == "ESMTP" else "HELO"
            if not s.delay_reject:
                verdict = await engine.check_helo(st, helo)
                helo_refusal = verdict if verdict.reply is not None else None
            if helo_refusal is None:
                st.helo = neuter(printable(helo, s.smtputf8_enable))
        if helo is not None and _esmtp_changes(tx, helo_refusal is not None):
            st.missing = st.missing | {"pipelining"}
        st.where = "MAIL"
        if s.helo_required and not st.helo:
            rule = helo_refusal.rule if helo_refusal is not None else None
            return Now(self._smtpd(replace(NEED_HELO, rule=rule)), "helo")
        st.smtputf8, st.size, st.sasl_sender = tx.smtputf8, tx.size, tx.sasl_sender
        if s.message_size_limit and st.size > s.message_size_limit:
            return Now(self._smtpd(Outcome(552, "5.3.4", "Message size exceeds fixed limit")),
                       "mail")
        if not s.delay_reject:
            verdict = await engine.check_mail(st, tx.sender)
            if verdict.reply is not None:
                return _now(verdict, "mail")
        st.sender = tx.sender
        st.instance = tx.queue_id or "replay"
        return None

    def _smtpd(self, outcome: Outcome) -> Outcome:
        """A reply of smtpd's own: soft_bounce turns 5xx into 4xx there too."""
        return outcome.soft(self.s.soft_bounce)

    async def _recipients(self, st: ReplayState, tx: Transaction, out: list[Now]) -> None:
        """Each RCPT; then DATA and the end of the message for those accepted."""
        no_rcpt, no_data, _ = then_key(tx.then)
        data = _sends(tx.data, no_rcpt)
        try:
            accepted = await self._rcpt(st, tx, out)
        except NotEvaluable as exc:  # a later recipient: the message's checks, which the
            if data is not False:    # ones accepted before it meet next, are not known
                out[:] = [Now(None, reason=str(exc)) if n.outcome is not None
                          and not n.outcome.refused else n for n in out]
            raise
        if not accepted or data is False:
            return
        eod = _sends(tx.end_of_data, no_data)
        try:
            refusal = await self._message(st, tx, accepted, eod is not False)
        except NotEvaluable as exc:
            refusal = Now(None, reason=str(exc))
        if refusal is not None and refusal.outcome is not None and (
                data is None or (refusal.stage == "end-of-data" and eod is None)):
            refusal = Now(None, reason=f"{refusal.stage} would be refused by "
                          f"{rule_text(refusal.outcome.rule)}, if the client sends it "
                          "(it could not then)")
        if refusal is not None:
            for index in accepted:
                out[index] = refusal

    async def _rcpt(self, st: ReplayState, tx: Transaction, out: list[Now]) -> list[int]:
        """The RCPT commands; the indexes of the recipients accepted."""
        engine, first = self.engine, tx.pipelining_from
        limit = self.s.recipient_limit
        if "recipient_order" in tx.missing and len(tx.recipients) > limit:
            raise NotEvaluable("smtpd_recipient_limit needs the order of the recipients, "
                               "which the log does not show")
        if "recipient_count" in tx.missing and limit < POSTFIX_RECIPIENT_LIMIT:
            raise NotEvaluable("an smtpd_recipient_limit below Postfix's default needs the "
                               "recipients accepted without a message, which the log does "
                               "not show")
        accepted: list[int] = []
        for index, recipient in enumerate(tx.recipients):
            st.where = "RCPT"
            st.ill_pipelining = first is not None and index >= first
            if st.rcpt_count >= self.s.recipient_limit:
                out.append(Now(TOO_MANY, "rcpt"))
                continue
            verdict = await engine.check_rcpt(st, recipient)
            if verdict.reply is not None:
                out.append(_now(verdict, "rcpt"))
                continue
            out.append(Now(ACCEPTED, "rcpt"))
            accepted.append(index)
            st.rcpt_count += 1
            if st.recipient is None:
                st.recipient = recipient
        return accepted

    async def _message(self, st: ReplayState, tx: Transaction, accepted: list[int],
                       eod: bool) -> Now | None:
        """DATA and (`eod`) the end of the message: the refusal, or None."""
        st.ill_pipelining = tx.pipelining_from is not None
        only = tx.recipients[accepted[0]] if len(accepted) == 1 else None
        st.where = "DATA"
        verdict = await self.engine.check_data(st, only)
        if verdict.reply is not None:
            return _now(verdict, "data")
        if not eod:
            return None
        st.where = "END-OF-MESSAGE"
        st.size = tx.message_size or 0
        verdict = await self.engine.check_eod(st, only)
        return _now(verdict, "end-of-data") if verdict.reply is not None else None


def _esmtp_changes(tx: Transaction, refused_now: bool) -> bool:
    """Whether the session may be ESMTP now where it was not then, or the other way round:
    the candidate refuses an EHLO accepted then, or accepts a HELO/EHLO refused then. Then
    whether the client's pipelining is improper is not known (the record has what smtpd
    flagged then, not what the client sent ahead)."""
    refused_then = tx.then.helo is not None and tx.then.helo.refused
    if tx.protocol == "ESMTP":
        return refused_now
    return refused_then and not refused_now


def _sends(sent: bool, no_chance: bool) -> bool | None:
    """Whether the client sends DATA (the message) now: as then; None (not known) when it
    could not then (every recipient refused; DATA refused), so that a refusal there is not
    a certain answer."""
    return True if sent else None if no_chance else False


def _now(verdict: Verdict, stage: str) -> Now:
    return Now(Outcome.of(verdict, 250), stage)


def rule_text(rule: Rule | None) -> str:
    """`restriction table entry`, as the reports show a rule."""
    if rule is None:
        return "(smtpd)"
    return " ".join(part for part in (rule.restriction, rule.table, rule.entry) if part)
