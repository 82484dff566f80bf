"""`mailgate policyd`'s request handling: a Postfix policy request is run through
`policyd_restrictions` by the smtpd engine and its result becomes one `action=` reply."""

from __future__ import annotations

import mmap
import multiprocessing
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import (
    NAME_FORGED,
    NAME_OK,
    NAME_PERM,
    CheckState,
    Client,
    ClientCert,
    Marks,
)
from mailgate.engine.engine import Engine
from mailgate.engine.reply import Reply, Status
from mailgate.engine.stages import STAGES, Stage
from mailgate.engine.tarpit import tarpit_delay
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.policy.protocol import ProtocolError, Request
from mailgate.state import StateUnavailable, Store

Log = Callable[[str], None]
# "<name>: Client host rejected: " - Postfix adds its own for the stage that asked.
_PREFIX = re.compile(r"(?:<[^>]*>: )?(?:(?:Client host|Helo command|Sender address|"
                     r"Recipient address|Etrn command|Data command|End-of-data) rejected: )?")
_TARPIT = "Error: too many errors"
ERRORS = "policyd:errors:"  # state keys of SharedErrors
_TEMPFAIL = "451 4.3.5 Server configuration problem"


@dataclass(frozen=True, slots=True)
class PolicydSettings:
    restrictions: tuple[str, ...]
    default_action: str
    deadline: float
    state_ttl: float
    state_size: int

    @classmethod
    def from_config(cls, cfg: Config) -> PolicydSettings:
        return cls(restrictions=cfg.get_list("policyd_restrictions"),
                   default_action=cfg.get_str("policyd_default_action"),
                   deadline=cfg.get_time("policyd_reply_deadline"),
                   state_ttl=cfg.get_time("policyd_client_state_ttl"),
                   state_size=cfg.get_int("policyd_client_state_size"))


class ClientErrors:
    """Recipient rejections per client address, forgotten `ttl` seconds after the last one;
    in shared memory, so that every policyd process sees them (created before the fork).

    Addresses hash to `size` slots of (address check, count, time of the last). A slot held
    by another address that is still live is left alone: a collision can forget an
    offender's errors, never count someone else's against an innocent client."""

    _SLOT = struct.Struct("=Iid")

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self.mem = mmap.mmap(-1, self._SLOT.size * size)
        self.lock = multiprocessing.Lock()

    def _slot(self, addr: str) -> tuple[int, int]:
        key = addr.encode()
        return (zlib.crc32(key) % self.size) * self._SLOT.size, zlib.adler32(key) | 1

    def get(self, addr: str) -> int:
        offset, check = self._slot(addr)
        owner, count, last = self._SLOT.unpack_from(self.mem, offset)
        if owner != check or self.clock() - last >= self.ttl:
            return 0
        return int(count)

    def add(self, addr: str) -> int:
        offset, check = self._slot(addr)
        now = self.clock()
        with self.lock:
            owner, count, last = self._SLOT.unpack_from(self.mem, offset)
            if now - last >= self.ttl or owner == 0:
                owner, count = check, 0
            if owner != check:
                return 0
            count += 1
            self._SLOT.pack_into(self.mem, offset, check, count, now)
            return int(count)

    async def count(self, addr: str) -> int:
        return self.get(addr)

    async def note(self, addr: str) -> None:
        self.add(addr)


class SharedErrors:
    """The same counts in the shared state store (Redis), so that a client's errors follow
    it from one gateway to the next: a gauge per address (`policyd:errors:ADDR`), forgotten
    `ttl` seconds after the last error. The store failing: no errors are known
    (fail_open, local: the local database's) or StateUnavailable (tempfail)."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store, self.ttl = store, ttl

    async def count(self, addr: str) -> int:
        try:
            value = await self.store.get(ERRORS + addr)
        except StateUnavailable as exc:
            if exc.fail_open:
                return 0
            raise
        return int(value) if value and value.isdigit() else 0

    async def note(self, addr: str) -> None:
        try:
            await self.store.add(ERRORS + addr, 1, self.ttl)
        except StateUnavailable:
            pass  # (counted nowhere: the client gets the benefit of the doubt)


_REQUEST_NAMES = {"helo": "helo_name", "sender": "sender", "recipient": "recipient",
                  "etrn": "etrn_domain"}


def _named(st: CheckState, stage: Stage, req: Request) -> str:
    """What the stage's replies name (smtpd_check_client/helo/mail/rcpt/etrn/data/eod)."""
    if stage.subject == "client":
        return st.namaddr
    attribute = _REQUEST_NAMES.get(stage.subject)
    return stage.subject if attribute is None else req.get(attribute)


def check_state(req: Request) -> CheckState:
    """The session as the request describes it (name "unknown": no verified name)."""
    name = req.get("client_name") or "unknown"
    reverse = req.get("reverse_client_name") or "unknown"
    port = req.get("client_port")
    client = Client(name=name, addr=req.get("client_address"),
                    port=int(port) if port.isdigit() else 0, reverse_name=reverse,
                    name_status=NAME_OK if name != "unknown" else
                    NAME_FORGED if reverse != "unknown" else NAME_PERM,
                    reverse_status=NAME_OK if reverse != "unknown" else NAME_PERM,
                    server_addr=req.get("server_address"))
    state = req.get("protocol_state").upper()
    in_mail = state in ("MAIL", "RCPT", "DATA", "BDAT", "END-OF-MESSAGE")
    count = req.get("recipient_count")
    rcpt_count = int(count) if count.isdigit() else 0
    recipient = req.get("recipient") or None
    if state in ("DATA", "BDAT", "END-OF-MESSAGE") and rcpt_count != 1:
        recipient = None  # the log names the only recipient, as smtpd's data checks
    size = req.get("size")
    return CheckState(client=client, helo=req.get("helo_name") or None,
                      sender=req.get("sender") if in_mail else None, recipient=recipient,
                      rcpt_count=rcpt_count, where=state,
                      protocol=req.get("protocol_name") or "SMTP",
                      queue_id=req.get("queue_id") or None,
                      instance=req.get("instance"), size=int(size) if size.isdigit() else 0,
                      sasl_method=req.get("sasl_method") or None,
                      sasl_username=req.get("sasl_username") or None,
                      sasl_sender=req.get("sasl_sender") or None,
                      ccert=_ccert(req),
                      encryption=_encryption(req))


def _ccert(req: Request) -> ClientCert | None:
    """The client certificate, from the ccert_* attributes (subject and issuer only come
    with a trusted one, as smtpd sends them)."""
    fingerprint, pkey = req.get("ccert_fingerprint"), req.get("ccert_pubkey_fingerprint")
    if not fingerprint and not pkey:
        return None
    subject, issuer = req.get("ccert_subject"), req.get("ccert_issuer")
    return ClientCert(subject, issuer, fingerprint, pkey, bool(subject or issuer))


def _encryption(req: Request) -> tuple[str, str, int] | None:
    """The session's TLS, from the encryption_* attributes (none without a protocol)."""
    protocol = req.get("encryption_protocol")
    if not protocol:
        return None
    bits = req.get("encryption_keysize")
    return protocol, req.get("encryption_cipher"), int(bits) if bits.isdigit() else 0


def _detail(reply: Reply | None) -> str:
    """`CODE D.S.N text` without the stage prefix (the asking smtpd adds its own)."""
    line = "" if reply is None else reply.line
    head, text = line[:10], line[10:]
    return head + _PREFIX.sub("", text, count=1)


def _mark_actions(marks: Marks) -> list[str]:
    """What the access maps asked of the message, as access(5) actions (DISCARD first)."""
    out = []
    if marks.redirect:
        out.append(f"REDIRECT {marks.redirect}")
    if marks.filter:
        out.append(f"FILTER {marks.filter}")
    if marks.hold:
        out.append("HOLD")
    out += [f"BCC {addr}" for addr in marks.bcc]
    out += [f"PREPEND {header}" for header in marks.prepend]
    return out


class PolicyService:
    """Answers requests; the engine, settings and clock are handed in."""

    def __init__(self, engine: Engine, settings: PolicydSettings, smtpd: SmtpdSettings,
                 log: Log, errors: ClientErrors | SharedErrors, metrics: Metrics = NO_METRICS) -> None:
        self.engine = engine
        self.metrics = metrics
        self.s = settings
        self.smtpd = smtpd
        self.log = log
        self.errors = errors
        self.requests = 0

    async def answer(self, item: Request | ProtocolError, peer: str) -> tuple[str, float]:
        """The action for one request and how long to hold it back (the tarpit); never
        raises: the default action on any failure. The caller enforces the deadline."""
        self.requests += 1
        if isinstance(item, ProtocolError):
            self.log(f"warning: malformed policy request from {peer}: {item.why}")
            return self.s.default_action, 0.0
        kind = item.get("request")
        if kind != "smtpd_access_policy":
            self.log(f"warning: unrecognized request type from {peer}: \"{kind}\"")
            return self.s.default_action, 0.0
        try:
            return await self._decide(item)
        except Exception as exc:
            self.log(f"warning: request from {peer} for {item.get('client_address')}: "
                     f"internal error: {exc!r}; answering the default action")
        return self.s.default_action, 0.0

    def expired(self, item: Request | ProtocolError, peer: str) -> str:
        """The answer to a request that missed the deadline."""
        addr = item.get("client_address") if isinstance(item, Request) else ""
        self.log(f"warning: request from {peer} for {addr}: no answer within "
                 f"{self.s.deadline:g}s; answering the default action")
        return self.s.default_action

    async def _decide(self, req: Request) -> tuple[str, float]:
        st = check_state(req)
        stage = STAGES.get(st.where)
        if stage is None:
            self.log(f"warning: unknown protocol_state \"{st.where}\" in request for "
                     f"{st.client.addr}")
            return self.s.default_action, 0.0
        addr = st.client.addr
        try:
            errors = await self.errors.count(addr)
        except StateUnavailable:  # redis_failure_action = tempfail (one warning: the store's)
            return _TEMPFAIL, 0.0
        if errors >= self.smtpd.hard_error_limit:
            return _detail(self.engine.refuse(st, 421, "4.7.0", _TARPIT)), 0.0
        action = await self._evaluate(st, stage, req)
        if action[:1] in "45" and action[:3].isdigit() and st.where == "RCPT":
            await self.errors.note(addr)
        return action, tarpit_delay(self.smtpd, errors)

    async def _evaluate(self, st: CheckState, stage: Stage, req: Request) -> str:
        outcome = await self.engine.run_stage(
            st, stage, self.s.restrictions, _named(st, stage, req), helo=st.helo,
            sender=st.sender, recipient=st.recipient,
            etrn_domain=req.get("etrn_domain") or None)
        status = outcome.status
        if status is Status.REJECT:
            return _detail(outcome.reply)
        pending = outcome.pending
        if pending is not None:
            detail = _PREFIX.sub("", pending.text, count=1)
            return f"DEFER_IF_PERMIT {pending.dsn} {detail}"
        marks = st.marks
        if marks.discard:
            return "DISCARD"
        actions = _mark_actions(marks)
        answer = "OK" if status is Status.OK else actions.pop(0) if actions else "DUNNO"
        for extra in actions:  # one action per reply: OK or the first side effect wins
            self.log(f"warning: policy reply for {st.client.addr}: one action per reply; "
                     f"dropped {extra.split(' ', 1)[0]}")
        return answer
