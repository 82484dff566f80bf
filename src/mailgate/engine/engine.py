"""The stage checks smtpd calls (smtpd_check_client/helo/mail/rcpt/etrn/data/eod).

Each returns a Verdict: the Reply when the command is to be refused (None when it may go
on) and the delay the `sleep` restriction asked for. With
`smtpd_delay_reject = yes` the client, helo and sender lists run again at every RCPT (and
client and helo at ETRN). A pending `defer_if_permit` travels client → helo → sender →
recipient and becomes the reply when nothing rejects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailgate.engine import (  # noqa: F401  (registration)
    access,
    dnsbl,
    dnschecks,
    greylist,
    hosts,
    policy,
    recipients,
    restrictions,
    senderlogin,
    tlschecks,
)
from mailgate.engine.connect import Prefetch, lookup_client
from mailgate.engine.context import CheckState, Client, Pending
from mailgate.engine.evaluate import CheckAborted, Evaluation, Frame, Log
from mailgate.engine.reply import PASS, RECIPIENT, SENDER, Reply, Status, Verdict
from mailgate.engine.resolve import Resolution, bad_address, resolve
from mailgate.engine.settings import EngineSettings
from mailgate.engine.stages import CLIENT, DATA, EOD, ETRN, HELO, MAIL, RCPT, Stage
from mailgate.engine.tables import EngineTables
from mailgate.errors import MapError


class Engine:
    """The restriction engine: settings and tables given once, a CheckState per session."""

    def __init__(self, settings: EngineSettings, tables: EngineTables,
                 log: Log = lambda text: None, driver: bool = False) -> None:
        self.settings = settings
        self.tables = tables
        self.log = log
        self.driver = driver  # the smtpd_check test driver's stubs (conformance mode)
        self.prefetch = Prefetch.plan(settings)

    async def connect(self, addr: str, port: int, peername_lookup: bool = True) -> Client:
        """A new client: its DNS list queries start, in parallel with its name lookup."""
        dns = self.tables.dns
        if dns is not None:
            self.prefetch.start_address(dns.resolver, addr)
        client = await lookup_client(self.tables.names, addr, port, peername_lookup,
                                     lambda text: self.log("warning: " + text))
        if dns is not None:
            self.prefetch.start_name(dns.resolver, client)
        return client

    def started_client(self, client: Client) -> None:
        """XCLIENT announced a new client: start its DNS list queries, as at connect."""
        dns = self.tables.dns
        if dns is not None:
            self.prefetch.start_address(dns.resolver, client.addr)
            self.prefetch.start_name(dns.resolver, client)

    def started_helo(self, helo: str) -> None:
        """HELO arrived: start the queries its checks will make (answered by RCPT)."""
        if self.tables.dns is not None:
            self.prefetch.start_helo(self.tables.dns.resolver, helo)

    def started_mail(self, sender: str) -> None:
        """MAIL arrived: start the sender domain's queries."""
        if self.tables.dns is not None:
            self.prefetch.start_sender(self.tables.dns.resolver, sender)

    def address(self, address: str) -> Resolution | None:
        """An envelope address resolved for the command's syntax test and its checks (None
        for the null address, or when a table fails: the restrictions report that)."""
        if not address:
            return None
        try:
            return resolve(self.tables.resolver, address, self.settings.smtputf8_enable)
        except MapError:
            return None

    def bad_address(self, resolution: Resolution | None, smtputf8: bool) -> bool:
        """smtpd_check_addr() on an address from `address()` (see resolve.bad_address)."""
        if resolution is None:
            return False
        return bad_address(resolution, smtputf8, self.settings.smtputf8_enable)

    def _lists(self, stage: str) -> tuple[str, ...]:
        return self.settings.lists.get(stage, ())

    # --- the stage checks smtpd calls ---------------------------------------------------
    async def check_client(self, st: CheckState) -> Verdict:
        ev = Evaluation(self, st, "client", st.helo, st.sender, st.recipient)
        return self._verdict(ev, await self._client(ev))

    async def check_helo(self, st: CheckState, helo: str | None) -> Verdict:
        if helo is None:
            return PASS
        ev = Evaluation(self, st, "helo", helo, st.sender, st.recipient)
        return self._verdict(ev, await self._helo(ev, helo))

    async def check_mail(self, st: CheckState, sender: str | None,
                         resolution: Resolution | None = None) -> Verdict:
        if sender is None:  # dip_sender keeps its value from an earlier MAIL, as in Postfix
            return PASS
        ev = Evaluation(self, st, "sender", st.helo, sender, st.recipient)
        if resolution is not None:
            ev.resolved = {sender: resolution}
        return self._verdict(ev, await self._mail(ev, sender))

    async def check_rcpt(self, st: CheckState, recipient: str,
                         resolution: Resolution | None = None) -> Verdict:
        """smtpd_check_rcpt(); with smtpd_delay_reject the client, helo and sender lists
        run first, in the same Evaluation (one resolution of each address)."""
        if recipient.lower() == "postmaster":
            return PASS
        ev = Evaluation(self, st, "relay", st.helo, st.sender, recipient)
        if resolution is not None:
            ev.resolved = {recipient: resolution}
        if self.settings.delay_reject and await self._delayed(ev, mail=True):
            return self._verdict(ev, Status.REJECT)
        ev.begin("relay", st.dip_sender)
        first, second = ("relay", "recipient")
        if not self.settings.relay_before_recipient:
            first, second = second, first
        frame = Frame(recipient, RCPT.cls, RCPT.acl)
        status = Status.DUNNO
        for stage in (first, second):
            names = self._lists(stage)
            ev.stage = stage
            if names:
                status = await ev.check(names, frame)
            if status is Status.REJECT:
                break
        status = self._enforce_dip(ev, status)
        if (status is not Status.REJECT and self.settings.reject_unlisted_recipient
                and not ev.rcptmap_checked and not st.marks.discard):
            ev.stage, ev.cur_lname, ev.cur_name = ("recipient", "reject_unlisted_recipient",
                                                   "")
            status = self._guarded(ev, lambda: recipients.check_rcpt_maps(
                ev, recipient, RECIPIENT))
        return self._verdict(ev, status)

    async def check_etrn(self, st: CheckState, domain: str) -> Verdict:
        ev = Evaluation(self, st, "etrn", st.helo, st.sender, st.recipient, domain)
        if self.settings.delay_reject and await self._delayed(ev, mail=False):
            return self._verdict(ev, Status.REJECT)
        ev.begin("etrn", st.dip_client or st.dip_helo)
        status = Status.DUNNO
        if self._lists("etrn"):
            status = await ev.check(self._lists("etrn"), Frame(domain, ETRN.cls, ETRN.acl))
        return self._verdict(ev, self._enforce_dip(ev, status))

    async def check_data(self, st: CheckState, recipient: str | None) -> Verdict:
        return await self._data_stage(st, DATA, "data", recipient)

    async def check_eod(self, st: CheckState, recipient: str | None) -> Verdict:
        return await self._data_stage(st, EOD, "end_of_data", recipient)

    # --- for callers answering for another MTA (policyd) ------------------------------------
    async def run_stage(self, st: CheckState, stage: Stage, names: tuple[str, ...],
                        name: str, *, helo: str | None, sender: str | None,
                        recipient: str | None, etrn_domain: str | None = None) -> Outcome:
        """Run one restriction list as `stage` would, naming `name` in its replies; the
        pending defer_if_permit is returned, not enforced."""
        ev = Evaluation(self, st, "policyd", helo, sender, recipient, etrn_domain)
        status = await ev.check(names, Frame(name, stage.cls, stage.acl)) if names \
            else Status.DUNNO
        reply = ev.reply if status is Status.REJECT else None
        return Outcome(status, reply, ev.dip)

    def refuse(self, st: CheckState, code: int, dsn: str, text: str) -> Reply:
        """A reply made and logged as a restriction's (`reject:`), never softened by
        warn_if_reject; soft_bounce applies."""
        ev = Evaluation(self, st, "policyd", st.helo, st.sender, st.recipient)
        ev.reject(code, dsn, text, hard=True)
        assert ev.reply is not None
        return ev.reply

    # --- the stages ---------------------------------------------------------------------
    async def _client(self, ev: Evaluation) -> Status:
        st = ev.st
        ev.begin("client", None)
        status = Status.DUNNO
        names = self._lists("client")
        if names:
            status = await ev.check(names, Frame(st.namaddr, CLIENT.cls, CLIENT.acl))
        st.dip_client = ev.dip
        return status

    async def _helo(self, ev: Evaluation, helo: str) -> Status:
        st = ev.st
        ev.begin("helo", st.dip_client)
        status = Status.DUNNO
        names = self._lists("helo")
        if names:
            status = await ev.check(names, Frame(helo, HELO.cls, HELO.acl))
        st.dip_helo = ev.dip
        return status

    async def _mail(self, ev: Evaluation, sender: str) -> Status:
        st = ev.st
        ev.begin("sender", st.dip_client or st.dip_helo)  # "the client may skip the helo"
        status = Status.DUNNO
        names = self._lists("sender")
        if names:
            status = await ev.check(names, Frame(sender, MAIL.cls, MAIL.acl))
        if (self.settings.reject_unlisted_sender and status is not Status.REJECT
                and not st.sender_rcptmap_checked and not st.marks.discard and sender):
            ev.stage, ev.cur_lname, ev.cur_name = "sender", "reject_unlisted_sender", ""
            status = self._guarded(ev, lambda: recipients.check_rcpt_maps(
                ev, sender, SENDER))
        st.dip_sender = ev.dip
        return status

    async def _delayed(self, ev: Evaluation, mail: bool) -> bool:
        """smtpd_delay_reject: the client, helo (and sender) lists again; True: refused."""
        st = ev.st
        if await self._client(ev) is Status.REJECT:
            return True
        if st.helo is not None and await self._helo(ev, st.helo) is Status.REJECT:
            return True
        return mail and st.sender is not None and \
            await self._mail(ev, st.sender) is Status.REJECT

    async def _data_stage(self, st: CheckState, stage: Stage, metric: str,
                          recipient: str | None) -> Verdict:
        """DATA and END-OF-DATA lists: the only recipient (if one) is named in the log (the
        first accepted one, kept even after a refused BDAT transaction)."""
        names = self._lists(stage.list)
        if not names:
            return PASS
        only = (st.recipient if recipient is None else recipient) if st.rcpt_count == 1 \
            else None
        ev = Evaluation(self, st, metric, st.helo, st.sender, only)
        status = await ev.check(names, Frame(stage.subject, stage.cls, None))
        return self._verdict(ev, self._enforce_dip(ev, status))

    @staticmethod
    def _verdict(ev: Evaluation, status: Status) -> Verdict:
        reply = ev.reply if status is Status.REJECT else None
        if reply is None:
            return Verdict(delay=ev.sleep) if ev.sleep else PASS
        return Verdict(reply, ev.sleep, ev.rule())

    @staticmethod
    def _enforce_dip(ev: Evaluation, status: Status) -> Status:
        """A pending defer_if_permit becomes the reply unless the result is a reject."""
        pending = ev.dip
        if status is not Status.REJECT and pending is not None:
            ev.cur_lname, ev.cur_name = "defer_if_permit", ""
            return ev.reject(pending.code, pending.dsn, pending.text, pending.hard)
        return status

    @staticmethod
    def _guarded(ev: Evaluation, check: Callable[[], Status]) -> Status:
        try:
            return check()
        except CheckAborted:
            return Status.REJECT


@dataclass(frozen=True, slots=True)
class Outcome:
    """A restriction list's result for policyd: the status, the reply when it refused, and
    a defer_if_permit left pending."""

    status: Status
    reply: Reply | None
    pending: Pending | None
