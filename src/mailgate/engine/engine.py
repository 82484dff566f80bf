"""The stage checks smtpd calls (smtpd_check_client/helo/mail/rcpt/etrn/data/eod).

Each returns the reply text when the command is to be refused, None when it may go on. With
`smtpd_delay_reject = yes` the client, helo and sender lists run again at every RCPT (and
client and helo at ETRN). A pending `defer_if_permit` travels client → helo → sender →
recipient and becomes the reply when nothing rejects.
"""

from __future__ import annotations

from collections.abc import Callable

from mailgate.dns.idna import domain_to_ascii
from mailgate.engine import (  # noqa: F401  (registration)
    access,
    dnsbl,
    dnschecks,
    hosts,
    policy,
    recipients,
    restrictions,
)
from mailgate.engine.connect import Prefetch, lookup_client
from mailgate.engine.context import CheckState, Client
from mailgate.engine.evaluate import CheckAborted, Evaluation, Frame, Log
from mailgate.engine.reply import RECIPIENT, SENDER, Status
from mailgate.engine.settings import EngineSettings
from mailgate.engine.tables import EngineTables
from mailgate.errors import MapError
from mailgate.maps.casefold import fold
from mailgate.smtp.hostnames import valid_utf8_hostname

CLIENT, HELO = "Client host", "Helo command"


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

    def started_helo(self, helo: str) -> None:
        """HELO arrived: start the queries its checks will make (answered by RCPT)."""
        if self.tables.dns is not None:
            self.prefetch.start_helo(self.tables.dns.resolver, helo)

    def started_mail(self, sender: str) -> None:
        """MAIL arrived: start the sender domain's queries."""
        if self.tables.dns is not None:
            self.prefetch.start_sender(self.tables.dns.resolver, sender)

    def bad_address(self, address: str, smtputf8: bool) -> bool:
        """smtpd_check_addr(): the resolver finds the domain malformed (`user@`, `a@b%c`;
        a non-ASCII domain is checked in its IDNA form when smtputf8_enable is on), or the
        client did not say SMTPUTF8 and the case-folded domain is not ASCII (`straße` folds
        to `strasse` and passes, `é` does not)."""
        if not address:
            return False
        utf8 = self.settings.smtputf8_enable
        try:
            found = self.tables.resolver.resolve(address)
        except MapError:
            return False
        if found.error and (found.domain.isascii() or not utf8
                            or not valid_utf8_hostname(found.domain, domain_to_ascii)):
            return True
        return not smtputf8 and not fold(found.domain, utf8).isascii()

    def _lists(self, stage: str) -> tuple[str, ...]:
        return self.settings.lists.get(stage, ())

    async def check_client(self, st: CheckState) -> str | None:
        st.dip = None
        ev = Evaluation(self, st, "client")
        status = Status.DUNNO
        if self._lists("client"):
            status = await ev.check(self._lists("client"),
                                    Frame(st.namaddr, CLIENT, "check_client_access"))
        st.dip_client = st.dip
        return ev.reply if status is Status.REJECT else None

    async def check_helo(self, st: CheckState, helo: str | None) -> str | None:
        if helo is None:
            return None
        saved, st.helo = st.helo, helo
        try:
            st.dip = st.dip_client
            ev = Evaluation(self, st, "helo")
            status = Status.DUNNO
            if self._lists("helo"):
                status = await ev.check(self._lists("helo"),
                                        Frame(helo, HELO, "check_helo_access"))
            st.dip_helo = st.dip
            return ev.reply if status is Status.REJECT else None
        finally:
            st.helo = saved

    async def check_mail(self, st: CheckState, sender: str | None) -> str | None:
        if sender is None:  # dip_sender keeps its value from an earlier MAIL, as in Postfix
            return None
        saved, st.sender = st.sender, sender
        try:
            st.dip = st.dip_client or st.dip_helo  # "the client may skip the helo/ehlo"
            ev = Evaluation(self, st, "sender")
            status = Status.DUNNO
            if self._lists("sender"):
                status = await ev.check(self._lists("sender"),
                                        Frame(sender, SENDER, "check_sender_access"))
            if (self.settings.reject_unlisted_sender and status is not Status.REJECT
                    and not st.sender_rcptmap_checked and not st.marks.discard and sender):
                ev.stage, ev.cur_lname, ev.cur_name = "sender", "reject_unlisted_sender", ""
                status = self._guarded(ev, lambda: recipients.check_rcpt_maps(
                    ev, sender, SENDER))
            st.dip_sender = st.dip
            return ev.reply if status is Status.REJECT else None
        finally:
            st.sender = saved

    async def check_rcpt(self, st: CheckState, recipient: str) -> str | None:
        if recipient.lower() == "postmaster":
            return None
        saved, st.recipient = st.recipient, recipient
        try:
            if self.settings.delay_reject:
                err = (await self.check_client(st) or await self.check_helo(st, st.helo)
                       or await self.check_mail(st, st.sender))
                if err:
                    return err
            st.dip = st.dip_sender
            ev = Evaluation(self, st, "relay")
            first, second = ("relay", "recipient")
            if not self.settings.relay_before_recipient:
                first, second = second, first
            frame = Frame(recipient, RECIPIENT, "check_recipient_access")
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
                    and not st.recipient_rcptmap_checked and not st.marks.discard):
                ev.stage, ev.cur_lname, ev.cur_name = ("recipient", "reject_unlisted_recipient",
                                                       "")
                status = self._guarded(ev, lambda: recipients.check_rcpt_maps(
                    ev, recipient, RECIPIENT))
            return ev.reply if status is Status.REJECT else None
        finally:
            st.recipient = saved

    async def check_etrn(self, st: CheckState, domain: str) -> str | None:
        if self.settings.delay_reject:
            err = await self.check_client(st) or await self.check_helo(st, st.helo)
            if err:
                return err
        st.dip = st.dip_client or st.dip_helo
        ev = Evaluation(self, st, "etrn")
        status = Status.DUNNO
        if self._lists("etrn"):
            status = await ev.check(self._lists("etrn"),
                                    Frame(domain, "Etrn command", "check_etrn_access"))
        status = self._enforce_dip(ev, status)
        return ev.reply if status is Status.REJECT else None

    async def check_data(self, st: CheckState, recipient: str | None) -> str | None:
        return await self._data_stage(st, "data", "DATA", "Data command", recipient)

    async def check_eod(self, st: CheckState, recipient: str | None) -> str | None:
        return await self._data_stage(st, "eod", "END-OF-MESSAGE", "End-of-data", recipient)

    async def _data_stage(self, st: CheckState, stage: str, name: str, cls: str,
                          recipient: str | None) -> str | None:
        """DATA and END-OF-DATA lists: the only recipient (if one) is named in the log."""
        names = self._lists(stage)
        if not names:
            return None
        saved = st.recipient  # kept (with the count) even after a refused BDAT transaction
        st.recipient = (saved if recipient is None else recipient) if st.rcpt_count == 1 else None
        try:
            st.dip = None
            ev = Evaluation(self, st, "end_of_data" if stage == "eod" else stage)
            status = await ev.check(names, Frame(name, cls, None))
            status = self._enforce_dip(ev, status)
            return ev.reply if status is Status.REJECT else None
        finally:
            st.recipient = saved

    @staticmethod
    def _enforce_dip(ev: Evaluation, status: Status) -> Status:
        """A pending defer_if_permit becomes the reply unless the result is a reject."""
        pending = ev.st.dip
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
