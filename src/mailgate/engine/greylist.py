"""check_greylist: greylisting as postgrey 1.37 does it, in the shared state store, answered
through the restriction engine (decision 0063)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TypeVar

from mailgate.config.config import Config
from mailgate.dns.rbl import reverse_query
from mailgate.engine.access import table_result
from mailgate.engine.dnsbl import Listing, lookup, site
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.greylist_lists import (
    ClientAllowlist,
    RecipientAllowlist,
    read_clients,
    read_recipients,
)
from mailgate.engine.reply import Status
from mailgate.errors import ConfigError
from mailgate.state import StateUnavailable, Store

T = TypeVar("T")
# A triplet that passed (or a client auto-allowlisted) is trusted by the worker for this
# long: its last-seen time is then written at most this late (postgrey's max_age is counted
# in days), and most recipients cost no store operation (no round trip to Redis).
PASSED_CACHE = 60.0
PASSED_SIZE = 65_536
NAME = "check_greylist"
TRIPLET, CLIENT = "greylist:triplet:", "greylist:client:"  # state keys
HEADER = "X-Greylist"
_CONFIG_ERROR = "451 4.3.5 Server configuration error"  # as a failed access table
_HOUR = 3600  # postgrey counts a client's passes at most once an hour
_INSTANCES = 10  # postgrey's is_new_instance(): the last 10 messages given the header
_NUMBER = re.compile(r"\b[0-9]+\b", re.ASCII)
_BATV_TAG = re.compile(r"[0-9a-z]{10}")


@dataclass(frozen=True, slots=True)
class GreylistSettings:
    """The greylist_* parameters (postgrey's options of the same meaning)."""

    delay: int = 300
    max_age: float = 35 * 86400
    retry_window: float = 2 * 86400
    auto_allowlist_clients: int = 5
    ipv4_prefix_length: int = 24
    ipv6_prefix_length: int = 64
    action: str = "DEFER_IF_PERMIT"
    text: str = "Greylisted, see http://postgrey.schweikert.ch/help/%r.html"
    dnswl_sites: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Config) -> GreylistSettings:
        action = cfg.get_str("greylist_action")
        if action.upper() not in ("DEFER_IF_PERMIT", "DEFER") and \
                not re.fullmatch(r"4[0-9][0-9]", action):
            raise ConfigError(f"{cfg.origin('greylist_action')}: bad greylist_action: "
                              f"{action} (expected DEFER_IF_PERMIT, DEFER or a 4XX code)")
        return cls(delay=int(cfg.get_time("greylist_delay")),
                   max_age=cfg.get_time("greylist_max_age"),
                   retry_window=cfg.get_time("greylist_retry_window"),
                   auto_allowlist_clients=cfg.get_int("greylist_auto_allowlist_clients"),
                   ipv4_prefix_length=cfg.get_int("greylist_ipv4_prefix_length"),
                   ipv6_prefix_length=cfg.get_int("greylist_ipv6_prefix_length"),
                   action=action, text=cfg.get_str("greylist_text"),
                   dnswl_sites=cfg.get_list("greylist_dnswl_sites"))


def normalize_sender(sender: str) -> str:
    """postgrey's do_sender_substitutions(): a BATV tag (`prvs=tag=user`, or the reversed
    form) dropped, the address extension (`+...`) cut, numbers between word boundaries
    (VERP, list bounce counters) made `#`. The triplet key is lowercased afterwards."""
    user, at, domain = sender.partition("@")
    if not at:
        return sender
    if user.startswith("prvs="):
        parts = user.split("=")
        while parts and not parts[-1]:  # Perl's split() drops trailing empty fields
            parts.pop()
        if len(parts) == 3:
            tag1, tag2 = _BATV_TAG.match(parts[1]), _BATV_TAG.match(parts[2])
            user = parts[1] if tag2 and not tag1 else parts[2]
    user = user.split("+", 1)[0]
    return f"{_NUMBER.sub('#', user)}@{domain}"


def recipient_domain(recipient: str) -> str:
    """What postgrey puts for `%r`: the recipient without everything up to its last `@`."""
    return recipient.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the triplet database says: `wait` > 0 seconds to go (greylisted; `new` when
    first seen now), else a pass: `delayed` seconds after the first attempt when this is the
    triplet's first pass (0 for a known triplet); `allowlisted` names an allowlist that
    skipped the check; `promoted` when this pass made the client auto-allowlisted."""

    wait: int = 0
    new: bool = False
    delayed: int = 0
    allowlisted: str = ""
    promoted: bool = False


class Greylist:
    """The triplet database of one engine: settings, allowlists, the shared store and the
    clock that the store's expiry times use too."""

    def __init__(self, settings: GreylistSettings, store: Store,
                 clients: ClientAllowlist | None = None,
                 recipients: RecipientAllowlist | None = None,
                 clock: Callable[[], float] = time.time, hostname: str = "") -> None:
        self.s = settings
        self.store = store
        self.clients = clients or ClientAllowlist()
        self.recipients = recipients or RecipientAllowlist()
        self.clock = clock
        self.hostname = hostname
        self.instances: deque[str] = deque(maxlen=_INSTANCES)
        # what passed lately (key → until), so that a known triplet or an auto-allowlisted
        # client costs no store operation for PASSED_CACHE seconds
        self.passed: dict[str, tuple[float, Decision]] = {}

    @classmethod
    def from_config(cls, cfg: Config, store: Store, warn: Callable[[str], None]) -> Greylist:
        """The settings, and the allowlist files read once (a bad line: a warning)."""
        clock: Callable[[], float] = getattr(store, "clock", time.time)
        return cls(GreylistSettings.from_config(cfg), store,
                   read_clients(cfg.get_list("greylist_allowlist_clients"), warn),
                   read_recipients(cfg.get_list("greylist_allowlist_recipients"), warn),
                   clock, cfg.get_str("myhostname"))

    def network(self, addr: str) -> str | None:
        """The client's network as the triplet names it (`192.0.2.0` for a /24), or None
        for a client address that is not an IP address."""
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        length = self.s.ipv4_prefix_length if ip.version == 4 else self.s.ipv6_prefix_length
        return str(ipaddress.ip_network(f"{ip}/{length}", strict=False).network_address)

    async def decide(self, name: str, addr: str, network: str, sender: str,
                     recipient: str) -> Decision:
        """postgrey's smtpd_access_policy(): allowlists, the auto-allowlisted clients, then
        the triplet (first seen, last seen) updated. Raises StateUnavailable."""
        if self.clients.match(name, addr):
            return Decision(allowlisted="client allowlist")
        if self.recipients.match(recipient):
            return Decision(allowlisted="recipient allowlist")
        now = int(self.clock())
        client = CLIENT + _canonical(addr)
        key = TRIPLET + f"{network}/{normalize_sender(sender)}/{recipient}".lower()
        cached = self._cached(client) or self._cached(key)
        if cached is not None:
            return cached
        decision = await self._decide(now, client, key)
        if not decision.wait:
            self._remember(client if decision.allowlisted else key, decision)
        return decision

    def _cached(self, key: str) -> Decision | None:
        entry = self.passed.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def _remember(self, key: str, decision: Decision) -> None:
        """A pass, trusted for PASSED_CACHE seconds: the next ones are plain passes."""
        if len(self.passed) >= PASSED_SIZE:
            self.passed.clear()
        self.passed[key] = (self.clock() + PASSED_CACHE,
                            Decision(allowlisted=decision.allowlisted))

    async def _decide(self, now: int, client: str, key: str) -> Decision:
        """decide()'s lookups and updates in the store."""
        s, store = self.s, self.store
        count, counted = 0, None
        if s.auto_allowlist_clients:  # both keys asked at once: one round trip's wait
            client_value, triplet = await _together(store, store.get(client), store.get(key))
            count, counted = _pair(client_value)
            if counted is not None and count >= s.auto_allowlist_clients:
                if now >= counted + _HOUR or counted > now:  # "for statistics"
                    await store.put(client, f"{count + 1},{now}", s.max_age)
                return Decision(allowlisted="client auto-allowlist")
        else:
            triplet = await store.get(key)
        first, last = _pair(triplet)
        passed = last is not None and last - first >= s.delay
        if last is None or (not passed and now - first > s.retry_window) or first > now:
            first = now
        writes = [store.put(key, f"{first},{now}",
                            s.max_age if now - first >= s.delay else s.retry_window)]
        wait = s.delay - (now - first)
        promoted = False
        if s.auto_allowlist_clients and wait <= 0 and not passed and \
                (counted is None or now >= counted + _HOUR):
            count += 1
            writes.append(store.put(client, f"{count},{now}", s.max_age))
            promoted = count == s.auto_allowlist_clients
        await _together(store, *writes)  # (one more round trip's wait)
        if wait > 0:
            return Decision(wait=wait, new=first == now)
        return Decision(delayed=0 if passed else now - first, promoted=promoted)

    def reply_text(self, wait: int, recipient: str) -> str:
        """greylist_text with postgrey's substitutions: `%s` the seconds to wait, `%r` the
        recipient domain; a text without a status code gets 4.2.0 (postgrey's Exchange
        workaround, which Postfix >= 2.3 always gets)."""
        text = self.s.text
        if not text[:1].isdigit():
            text = "4.2.0 " + text
        return text.replace("%s", str(wait), 1).replace("%r", recipient_domain(recipient), 1)

    def header(self, delayed: int) -> str:
        date = time.strftime("%a, %d %b %Y %H:%M:%S %Z", time.localtime(self.clock()))
        host = f" at {self.hostname}" if self.hostname else ""
        return f"{HEADER}: delayed {delayed} seconds by mailgate-{NAME}{host}; {date}"

    def new_instance(self, instance: str) -> bool:
        """postgrey's is_new_instance(): True the first time a message (smtpd's instance)
        is seen among the last few; always True without one."""
        if not instance:
            return True
        if instance in self.instances:
            return False
        self.instances.append(instance)
        return True


async def _together(store: Store, *calls: Coroutine[object, object, T]) -> list[T]:
    """The calls' results: at once for a remote store (the waits overlap), else in turn
    (a local store answers without waiting; tasks would only cost)."""
    if store.shared:
        return list(await asyncio.gather(*calls))
    results: list[T] = []
    try:
        for call in calls:
            results.append(await call)
    finally:
        for call in calls[len(results) + 1:]:  # after a failure: never run
            call.close()
    return results


def _canonical(addr: str) -> str:
    """An address as one key whatever its spelling (`2001:DB8::0:1` is `2001:db8::1`)."""
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr


def _pair(value: str | None) -> tuple[int, int | None]:
    """`a,b` stored by decide(); (0, None) for none (or a value it cannot read)."""
    if value is None:
        return 0, None
    first, _, second = value.partition(",")
    try:
        return int(first), int(second.partition(",")[0])
    except ValueError:
        return 0, None


async def _dnswl(ev: Evaluation, sites: tuple[str, ...]) -> str | None:
    """The first greylist_dnswl_sites list that lists the client (permit_dnswl_client's
    lookup and filter); a list that fails to answer lists nobody."""
    key = reverse_query(ev.st.client.addr)
    if key is None or ev.tables.dns is None:
        return None
    for spec in sites:
        listed = site(ev, spec)
        if listed is not None and isinstance(await lookup(ev, listed, key), Listing):
            return listed.domain
    return None


@restriction(NAME)
async def check_greylist(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """Defer a (client network, sender, recipient) triplet until it is retried after
    greylist_delay; its first pass gets an X-Greylist: header. Without a recipient and a
    sender (MAIL, VRFY, ETRN, DATA with several recipients) there is nothing to do."""
    grey = ev.tables.greylist
    recipient, sender = ev.recipient, ev.sender
    if recipient is None or sender is None:
        return Status.DUNNO
    if grey is None:
        ev.warn(f"{NAME}: greylisting is not configured in this process")
        ev.server_error()
    client = ev.st.client
    network = grey.network(client.addr)
    if network is None:
        ev.note(f"greylist: client address {client.addr} is no IP address: skipped")
        return Status.DUNNO
    if grey.s.dnswl_sites:
        listed = await _dnswl(ev, grey.s.dnswl_sites)
        if listed is not None:
            ev.note(f"greylist: client listed by {listed}: skipped")
            return Status.DUNNO
    try:
        found = await grey.decide(client.name, client.addr, network, sender, recipient)
    except StateUnavailable as exc:
        if exc.fail_open:  # the administrator's choice (a remote store, which warned once)
            return Status.DUNNO
        ev.warn(f"{NAME}: state lookup error: {exc}")
        return await table_result(ev, NAME, _CONFIG_ERROR, recipient, frame)
    return await _answer(ev, grey, found, frame, recipient)


async def _answer(ev: Evaluation, grey: Greylist, found: Decision, frame: Frame,
                  recipient: str) -> Status:
    """The decision as an access(5) action: greylist_action with the reply text, PREPEND
    the header on a triplet's first pass, else DUNNO."""
    if found.allowlisted:
        ev.note(f"greylist: {found.allowlisted}")
        return Status.DUNNO
    if found.promoted:
        ev.info(f"{NAME}: client {ev.st.namaddr} auto-allowlisted after "
                f"{grey.s.auto_allowlist_clients} greylisted deliveries")
    if found.wait > 0:
        ev.note(f"greylist: {'new' if found.new else 'early retry'}, {found.wait}s to wait")
        value = f"{grey.s.action} {grey.reply_text(found.wait, recipient)}"
        return await table_result(ev, NAME, value, recipient, frame)
    if not found.delayed:
        ev.note("greylist: known triplet")
        return Status.DUNNO
    ev.note(f"greylist: passed after {found.delayed}s")
    if any(h.startswith(HEADER + ":") for h in ev.st.marks.prepend) or \
            not grey.new_instance(ev.st.instance):
        return Status.DUNNO  # one header per message
    return await table_result(ev, NAME, f"PREPEND {grey.header(found.delayed)}", recipient,
                              frame)
