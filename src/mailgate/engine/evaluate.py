"""Evaluates restriction lists as Postfix's smtpd_check.c does: one Evaluation per command.

An Evaluation carries what Postfix keeps in SMTPD_STATE during one check (recursion depth,
`warn_if_reject`, the pending `defer_if_reject` and `defer_if_permit`, the candidate
sender/recipient) and turns results into Reply values and the `reject:` /
`reject_warning:` log lines. Restrictions are looked up by name in REGISTRY.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from mailgate.addressing import Resolved
from mailgate.engine.context import CheckState, Pending
from mailgate.engine.reply import Reply, Rule, Status, dsn_valid, printable
from mailgate.engine.resolve import Resolution, resolve
from mailgate.errors import MapError
from mailgate.smtp.tokens import log_form

if TYPE_CHECKING:
    from mailgate.engine.engine import Engine

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Frame:
    """Where a restriction runs: the reply name and class, and what a bare table means."""

    name: str
    cls: str
    acl: str | None  # the check_*_access implied by a bare `type:table` (None: not allowed)


class Args:
    """The rest of a restriction list, for restrictions that take an argument."""

    __slots__ = ("index", "names")

    def __init__(self, names: tuple[str, ...], index: int) -> None:
        self.names = names
        self.index = index

    def peek(self) -> str | None:
        return self.names[self.index] if self.index < len(self.names) else None

    def take(self) -> str | None:
        value = self.peek()
        if value is not None:
            self.index += 1
        return value


Result = Status | Awaitable[Status]
Restriction = Callable[["Evaluation", Frame, Args], Result]
REGISTRY: dict[str, Restriction] = {}


def restriction(*names: str) -> Callable[[Restriction], Restriction]:
    """Register a function under one or more Postfix restriction names."""

    def register(func: Restriction) -> Restriction:
        for name in names:
            REGISTRY[name] = func
        return func

    return register


class CheckAborted(Exception):
    """Postfix's longjmp out of a check: the reply is already made and logged."""


class Evaluation:
    """The checks of one command: what Postfix keeps in SMTPD_STATE while it runs them.

    The candidate HELO name, sender and recipient of the command are kept here (the
    session's state is not changed while a check runs); `begin()` starts each stage list."""

    __slots__ = ("cur_index", "cur_lname", "cur_name", "cur_names", "dip", "dir", "engine",
                 "etrn_domain", "helo", "matched", "policy_nesting", "rcptmap_checked",
                 "recipient", "recursion", "reply", "resolved", "sender", "settings", "sleep",
                 "st", "stage", "tables", "warn_if_reject")

    def __init__(self, engine: Engine, st: CheckState, stage: str = "",
                 helo: str | None = None, sender: str | None = None,
                 recipient: str | None = None, etrn_domain: str | None = None) -> None:
        self.engine = engine
        self.stage = stage  # the list being run (client, helo, ...), for metrics
        # The restriction running (for metrics): its name, list entry and argument position.
        self.cur_lname = self.cur_name = ""
        self.cur_names: tuple[str, ...] = ()
        self.cur_index = 0
        self.settings = engine.settings
        self.tables = engine.tables
        self.st = st
        self.helo = helo
        self.sender = sender
        self.recipient = recipient
        self.etrn_domain = etrn_domain
        self.recursion = 0
        self.warn_if_reject = 0
        self.dir: Pending | None = None  # pending defer_if_reject
        self.dip: Pending | None = None  # pending defer_if_permit (carried stage to stage)
        self.reply: Reply | None = None
        self.sleep = 0.0  # seconds the `sleep` restriction asked for before the next reply
        self.policy_nesting = 0  # check_policy_service default actions being run
        self.rcptmap_checked = False  # smtpd's recipient_rcptmap_checked (this RCPT)
        self.resolved: dict[str, Resolution] | None = None  # this command's resolutions
        self.matched = ""  # the last access-table key found (Rule.entry)

    def begin(self, stage: str, dip: Pending | None) -> None:
        """A new stage list (smtpd_check_client, _helo, ...): no pending defer_if_reject;
        the defer_if_permit carried from the stage before."""
        self.stage = stage
        self.dir = None
        self.dip = dip

    def resolution(self, addr: str) -> Resolution:
        """The address resolved for this command's checks (once; smtpd_resolve_addr()'s
        cache); raises MapError on a table failure."""
        known = self.resolved
        if known is None:
            known = self.resolved = {}
        found = known.get(addr)
        if found is None:
            found = known[addr] = resolve(self.tables.resolver, addr,
                                          self.settings.smtputf8_enable)
        return found

    def resolve(self, addr: str) -> Resolved:
        """smtpd_resolve_addr() for a restriction: a table failure ends the check (451)."""
        try:
            return self.resolution(addr).found
        except MapError:
            self.dict_retry(addr)

    # --- logging --------------------------------------------------------------------
    def info(self, text: str) -> None:
        self.engine.log(text)

    def warn(self, text: str) -> None:
        self.engine.log("warning: " + text)

    def log_whatsup(self, action: str, text: str) -> None:
        """`QUEUEID: ACTION: WHERE from name[addr]: TEXT; from=<> to=<> proto=P helo=<h>`."""
        st = self.st
        line = f"{st.queue_id or 'NOQUEUE'}: {action}: {st.where} from {st.namaddr}: {text};"
        if self.sender is not None:
            line += f" from=<{log_form(self.sender)}>"
        if self.recipient is not None:
            line += f" to=<{log_form(self.recipient)}>"
        if st.protocol:
            line += f" proto={st.protocol}"
        if self.helo is not None:
            line += f" helo=<{self.helo}>"
        self.info(line)

    # --- results --------------------------------------------------------------------
    def reject(self, code: int, dsn: str, text: str, hard: bool = False) -> Status:
        """smtpd_check_reject(): the reply (or, under warn_if_reject, a warning), made once:
        code and DSN checked, soft_bounce applied, then logged."""
        warn_only = bool(self.warn_if_reject) and not hard
        line = printable(f"{code} {dsn} {text}", self.settings.smtputf8_enable)
        n = dsn_valid(line[4:]) if 400 <= code <= 599 else 0
        if not n:
            self.warn(f"{'SMTP reply' if not 400 <= code <= 599 else 'DSN detail'} code "
                      f"configuration error: {line}")
            code, dsn, text = 450, "4.7.1", "Service unavailable"
        else:
            dsn, text = line[4:4 + n], line[5 + n:]
        if not warn_only and self.dir is not None and code >= 500:
            pending, self.dir, self.warn_if_reject = self.dir, None, 0
            return self.reject(pending.code, pending.dsn, pending.text, pending.hard)
        if self.settings.soft_bounce and code >= 500:
            code -= 100
        klass = str(code // 100)
        if dsn[0] != klass:
            dsn = klass + dsn[1:]
        reply = Reply(code, dsn, text)
        self.log_whatsup("reject_warning" if warn_only else "reject", reply.line)
        metrics = self.tables.metrics
        if metrics.enabled:
            metrics.reject(self.stage, *self.restriction(), warn_only)
        if warn_only:
            return Status.DUNNO
        self.reply = reply
        return Status.REJECT

    def restriction(self) -> tuple[str, str]:
        """(restriction, table) that is deciding now: `check_client_access`,
        `hash:/etc/postfix/access`; the table is empty for restrictions without one."""
        lname, name = self.cur_lname, self.cur_name
        if ":" in name:
            return lname, name
        if lname.startswith("check_") and self.cur_index < len(self.cur_names):
            table = self.cur_names[self.cur_index]
            return lname, table if ":" in table else ""
        return lname, ""

    def rule(self) -> Rule:
        """The Rule deciding now: restriction, table and (for a table) the key found."""
        lname, table = self.restriction()
        return Rule(lname, table, self.matched if table else "")

    def defer_if_permit(self, code: int, dsn: str, text: str, explicit: bool = True) -> Status:
        """Remember the first reason to defer mail that would otherwise be accepted."""
        if self.warn_if_reject or not explicit:
            return self.reject(code, dsn, text)
        if self.dip is None:
            self.dip = Pending(code, dsn, text)
        return Status.DUNNO

    def defer_if_reject(self, code: int, dsn: str, text: str) -> Status:
        """Remember the first reason to soften a later reject in this list."""
        if self.dir is None:
            self.dir = Pending(code, dsn, text)
        return Status.DUNNO

    def server_error(self) -> NoReturn:
        """reject_server_error(): `451 4.3.5 Server configuration error`, ends the check."""
        self.reject(451, "4.3.5", "Server configuration error", hard=True)
        raise CheckAborted

    def dict_retry(self, name: str) -> NoReturn:
        """reject_dict_retry(): a table or resolver failed; ends the check."""
        self.reject(451, "4.3.0", f"<{name}>: Temporary lookup failure", hard=True)
        raise CheckAborted

    def permit(self, action: str, frame: Frame, extra: str = "") -> Status:
        """smtpd_acl_permit(): OK, logged when smtpd_log_access_permit_actions names it."""
        if self.dip is None and self.tables.log_permit(action):  # not when it will defer
            self.log_whatsup("permit", f"action={action} for {frame.cls}={frame.name} {extra}")
        return Status.OK

    # --- the list walker --------------------------------------------------------------
    async def run(self, names: tuple[str, ...], frame: Frame) -> Status:
        """generic_checks(): left to right until a restriction decides."""
        self.recursion += 1
        try:
            if self.recursion > 100:
                self.warn(f"SMTPD access map nesting exceeds 100 levels for {frame.name}")
                self.server_error()
            return await self._walk(names, frame)
        finally:
            if self.warn_if_reject >= self.recursion:  # a trailing warn_if_reject
                self.warn_if_reject = 0
            self.recursion -= 1

    async def _walk(self, names: tuple[str, ...], frame: Frame) -> Status:
        status = Status.DUNNO
        i = 0
        args = Args(names, 0)  # one cursor for the list (a restriction takes its argument)
        while i < len(names):
            if self.st.marks.discard:
                break
            name = names[i]
            lname = name.lower()
            args.index = i + 1
            if lname == "warn_if_reject":
                if not self.warn_if_reject:
                    self.warn_if_reject = self.recursion
                i += 1
                continue
            if ":" in name:
                if frame.acl is None:
                    self.warn("specify one of (check_client_access, "
                              "check_reverse_client_hostname_access, check_helo_access, "
                              "check_sender_access, check_recipient_access, check_etrn_access) "
                              f'before {frame.cls} restriction "{name}"')
                    self.server_error()
                lname, args.index = frame.acl, i
            status = await self._one(lname, name, frame, args)
            i = args.index
            if self.warn_if_reject >= self.recursion:
                self.warn_if_reject = 0
            if status is not Status.DUNNO:
                break
            if self.dip is not None and self.dir is not None:
                break
        return status

    async def _one(self, lname: str, name: str, frame: Frame, args: Args) -> Status:
        trace = self.st.trace
        if trace is not None:
            arg = args.peek() if lname.startswith("check_") and ":" not in name else None
            trace.append("  " * self.recursion + name + (f" {arg}" if arg else ""))
        self.cur_lname, self.cur_name = lname, name
        self.cur_names, self.cur_index = args.names, args.index
        func = REGISTRY.get(lname)
        if func is not None:
            result = func(self, frame, args)
            status = result if isinstance(result, Status) else await result
        elif lname in self.settings.classes:
            status = await self.run(self.settings.classes[lname], frame)
        else:
            self.warn(f'unknown smtpd restriction: "{name}"')
            self.server_error()
        if trace is not None:
            trace.append("  " * self.recursion + f"  => {status.name}"
                         + (f": {self.reply}" if status is Status.REJECT else ""))
        return status

    def note(self, text: str) -> None:
        """A line for `mailgate check`'s trace (what a table answered)."""
        if self.st.trace is not None:
            self.st.trace.append("  " * self.recursion + "  " + text)

    async def check(self, names: tuple[str, ...], frame: Frame) -> Status:
        """Run a stage list; a CheckAborted ends it with the reply already made."""
        try:
            return await self.run(names, frame)
        except CheckAborted:
            return Status.REJECT

