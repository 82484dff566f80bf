"""Policy delegation units: service settings and `{...}` overrides, the request attributes,
policyd's mapping of engine results to actions, the shared per-client error state (driven
clock), and the client's connection handling against a small in-test server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailgate.app import build_engine, build_resolver
from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import CheckState, Client
from mailgate.engine.policy import request
from mailgate.errors import ConfigError
from mailgate.maps import default_registry
from mailgate.policy import service
from mailgate.policy.client import PolicyClient, release
from mailgate.policy.protocol import PolicyReader, Request
from mailgate.policy.service import service_names
from mailgate.policyd.server import ClientErrors, PolicydSettings, PolicyService, check_state

# What Postfix 3.7.11 (Debian) sent in a live session, in its order (no SASL/TLS values).
POSTFIX_ATTRIBUTES = [
    "request", "protocol_state", "protocol_name", "client_address", "client_name",
    "client_port", "reverse_client_name", "server_address", "server_port", "helo_name",
    "sender", "recipient", "recipient_count", "queue_id", "instance", "size", "etrn_domain",
    "stress", "sasl_method", "sasl_username", "sasl_sender", "ccert_subject", "ccert_issuer",
    "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol",
    "encryption_cipher", "encryption_keysize", "policy_context",
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(tmp_path: Path, text: str = "") -> Config:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n" + text)
    return Config.load(str(tmp_path), [])


# --- service settings ------------------------------------------------------------------

def test_service_defaults_and_overrides(tmp_path: Path) -> None:
    base = service.defaults(config(tmp_path, "smtpd_policy_service_timeout = 7s\n"))
    plain = service.parse("inet:127.0.0.1:10040", base, "/q")
    assert (plain.transport, plain.endpoint, plain.timeout, plain.try_limit) == \
        ("inet", "127.0.0.1:10040", 7.0, 2)
    assert plain.default_action == "451 4.3.5 Server configuration problem"
    local = service.parse("unix:private/policy", base, "/q")
    assert (local.transport, local.endpoint, local.path) == \
        ("unix", "private/policy", "/q/private/policy")
    over = service.parse("{ inet:[::1]:9, timeout=10s, try_limit=1, max_idle=2m, "
                         "{ default_action = REJECT policy down }, policy_context=x }",
                         base, "/q")
    assert (over.endpoint, over.timeout, over.try_limit, over.max_idle) == \
        ("[::1]:9", 10.0, 1, 120.0)
    assert (over.default_action, over.policy_context) == ("REJECT policy down", "x")


@pytest.mark.parametrize(("spec", "error"), [
    ("{ inet:h:1, bogus=1 }", 'unknown option: "bogus = 1"'),
    ("{ inet:h:1, timeout=soon }", "timeout: bad time value or unit: soon"),
    ("{ inet:h:1, try_limit=0 }", "invalid try_limit parameter value 0 < 1"),
    ("{ inet:h:1, request_limit=x }", "bad numerical configuration: request_limit = x"),
    ("{ inet:h:1, timeout }", "missing '=' after attribute name"),
    ("{ }", "empty policy service"),
    ("{ inet:h:1", "missing '}'"),
    ("tcp:h:1", "invalid transport name: tcp in service: tcp:h:1"),
    ("inet:", 'need service transport:endpoint instead of "inet:"'),
    ("inet:nohostport", "need inet:host:port"),
])
def test_service_errors(tmp_path: Path, spec: str, error: str) -> None:
    base = service.defaults(config(tmp_path))
    with pytest.raises(ConfigError, match=error.replace("{", "\\{").replace("}", "\\}")):
        service.parse(spec, base, "/q")


def test_service_names_are_found_in_lists() -> None:
    lists = [("permit_mynetworks", "check_policy_service", "inet:127.0.0.1:1"),
             ("CHECK_POLICY_SERVICE", "{ unix:/p, timeout=1s }", "reject")]
    assert list(service_names(lists)) == ["inet:127.0.0.1:1", "{ unix:/p, timeout=1s }"]


# --- the request -------------------------------------------------------------------------

def test_request_has_postfix_attributes_in_order() -> None:
    st = CheckState(Client("host.example", "192.0.2.1", 4321, server_addr="127.0.0.1",
                           server_port=25), rcpt_count=1, where="DATA",
                    protocol="ESMTP", queue_id="ABC123", instance="1.2.3.0", size=99)
    attrs = request(st, "ctx", "helo.example", "s@example.org", "r@example.test")
    assert list(attrs) == POSTFIX_ATTRIBUTES
    assert (attrs["protocol_state"], attrs["recipient"], attrs["recipient_count"],
            attrs["client_port"], attrs["server_port"], attrs["policy_context"]) == \
        ("DATA", "r@example.test", "1", "4321", "25", "ctx")
    st.where = "RCPT"
    assert request(st, "")["recipient_count"] == "0"  # only DATA and END-OF-MESSAGE count
    st.where = "BDAT"
    assert request(st, "")["protocol_state"] == "DATA"


def test_check_state_from_request() -> None:
    req = Request({"protocol_state": "DATA", "client_address": "192.0.2.1",
                   "client_name": "unknown", "reverse_client_name": "ptr.example",
                   "sender": "", "recipient": "r@example.test", "recipient_count": "2",
                   "helo_name": "h"})
    st = check_state(req)
    assert st.sender == "" and st.recipient is None  # null sender; two recipients: none named
    assert (st.client.name, st.client.reverse_name, st.client.name_status) == \
        ("unknown", "ptr.example", 6)  # a PTR name that did not verify: forged
    connect = check_state(Request({"protocol_state": "CONNECT", "sender": "",
                                   "client_address": "192.0.2.1"}))
    assert connect.sender is None and connect.client.name == "unknown"


# --- policyd's answers ---------------------------------------------------------------------

async def _service(tmp_path: Path, restrictions: str, extra: str = "") -> PolicyService:
    cfg = config(tmp_path, f"mydestination = example.test\npolicyd_restrictions = {restrictions}"
                           f"\n{extra}")
    registry = default_registry()
    resolver = build_resolver(cfg, registry, frozenset())
    lines: list[str] = []
    engine, _ = build_engine(cfg, registry, resolver, lines.append, policyd=True)
    settings = PolicydSettings.from_config(cfg)
    svc = PolicyService(engine, settings, SmtpdSettings.from_config(cfg), lines.append,
                        ClientErrors(settings.state_ttl, 64))
    svc.lines = lines  # type: ignore[attr-defined]
    return svc


def _req(**attrs: str) -> Request:
    base = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
            "protocol_name": "ESMTP", "client_address": "192.0.2.1", "client_name": "h.example",
            "reverse_client_name": "h.example", "helo_name": "h.example",
            "sender": "s@example.org", "recipient": "r@example.test"}
    return Request({**base, **attrs})


@pytest.mark.parametrize(("restrictions", "attrs", "action"), [
    ("reject", {}, "554 5.7.1 Access denied"),
    ("check_client_access inline:{{192.0.2.1=REJECT go away}}", {}, "554 5.7.1 go away"),
    ("reject_unauth_destination", {"recipient": "x@elsewhere.example"},
     "554 5.7.1 Relay access denied"),
    ("reject_non_fqdn_sender", {"sender": "nodots"}, "504 5.5.2 need fully-qualified address"),
    ("defer_if_permit", {}, "DEFER_IF_PERMIT 4.7.0 defer_if_permit requested"),
    ("check_recipient_access inline:{{r@example.test=PREPEND X-A: 1}}", {}, "PREPEND X-A: 1"),
    ("check_recipient_access inline:{r@example.test=DISCARD}", {}, "DISCARD"),
    ("check_recipient_access inline:{r@example.test=HOLD}", {}, "HOLD"),
    ("permit", {}, "OK"),
    ("check_helo_access inline:{h.example=REJECT}", {"protocol_state": "EHLO"},
     "554 5.7.1 Access denied"),
    ("", {}, "DUNNO"),
])
def test_answers(tmp_path: Path, restrictions: str, attrs: dict[str, str], action: str) -> None:
    async def run() -> None:
        svc = await _service(tmp_path, restrictions)
        assert await svc.answer(_req(**attrs), "peer") == (action, 0.0)
    asyncio.run(run())


def test_one_action_per_reply(tmp_path: Path) -> None:
    async def run() -> None:
        svc = await _service(tmp_path, "check_recipient_access inline:{{r@example.test="
                                       "PREPEND X-A: 1}}, permit")
        assert await svc.answer(_req(), "peer") == ("OK", 0.0)
        assert any("dropped PREPEND" in x for x in svc.lines)  # type: ignore[attr-defined]
    asyncio.run(run())


def test_bad_requests_get_the_default_action(tmp_path: Path) -> None:
    async def run() -> None:
        svc = await _service(tmp_path, "reject", "policyd_default_action = DEFER_IF_PERMIT x")
        reader = PolicyReader()
        bad = reader.feed(b"garbage\n\n")[0]
        assert await svc.answer(bad, "peer") == ("DEFER_IF_PERMIT x", 0.0)
        assert await svc.answer(_req(request="junk"), "peer") == ("DEFER_IF_PERMIT x", 0.0)
        assert await svc.answer(_req(protocol_state="NOOP"), "peer") == \
            ("DEFER_IF_PERMIT x", 0.0)
        assert svc.expired(_req(), "peer") == "DEFER_IF_PERMIT x"
    asyncio.run(run())


def test_error_limits_across_requests(tmp_path: Path) -> None:
    async def run() -> None:
        svc = await _service(tmp_path, "reject", "smtpd_soft_error_limit = 1\n"
                                                 "smtpd_hard_error_limit = 2\n")
        assert await svc.answer(_req(), "p") == ("554 5.7.1 Access denied", 0.0)
        assert await svc.answer(_req(), "p") == ("554 5.7.1 Access denied", 1.0)  # tarpit
        assert await svc.answer(_req(), "p") == ("421 4.7.0 Error: too many errors", 0.0)
        assert (await svc.answer(_req(client_address="192.0.2.2"), "p"))[0].startswith("554")
    asyncio.run(run())


def test_client_errors_expire_and_never_collide() -> None:
    clock = Clock()
    errors = ClientErrors(ttl=60, size=1, clock=clock)
    assert [errors.add("192.0.2.1") for _ in range(3)] == [1, 2, 3]
    assert errors.add("192.0.2.2") == 0 and errors.get("192.0.2.2") == 0  # slot taken
    clock.now += 59
    assert errors.get("192.0.2.1") == 3
    clock.now += 1
    assert errors.get("192.0.2.1") == 0
    assert errors.add("192.0.2.2") == 1  # the expired slot is free again


# --- the client's connections -----------------------------------------------------------------

class Server:
    """Answers every request with `action=DUNNO`; counts connections and requests."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.reply = b"action=DUNNO\n\n"
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while await reader.readuntil(b"\n\n"):
                self.requests += 1
                writer.write(self.reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def close(self, server: asyncio.Server) -> None:
        server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0)  # let the transports finish closing


def test_client_reuses_and_retires_connections(tmp_path: Path) -> None:
    async def run() -> None:
        srv = Server()
        server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        base = service.defaults(config(tmp_path))
        clock = Clock()
        settings = service.parse(f"{{ inet:127.0.0.1:{port}, max_idle=10s, max_ttl=100s, "
                                 "request_limit=3 }", base, "/q")
        client = PolicyClient(settings, clock)
        warnings: list[str] = []
        assert await client.request({"a": "1"}, warnings.append) == b"DUNNO"
        assert await client.request({"a": "1"}, warnings.append) == b"DUNNO"
        assert srv.connections == 1  # reused
        clock.now += 10
        await client.request({"a": "1"}, warnings.append)
        assert srv.connections == 2  # idle too long: a new one
        for _ in range(3):
            await client.request({"a": "1"}, warnings.append)
        assert srv.connections == 3  # request_limit 3 closed the second
        clock.now += 100
        await client.request({"a": "1"}, warnings.append)
        assert srv.connections == 4 and not warnings  # max_ttl
        await client.close()
        await srv.close(server)
    asyncio.run(run())


def test_client_keeps_a_failed_connection_for_the_session(tmp_path: Path) -> None:
    """Postfix's last failed try leaves its connection open; a late answer makes the
    session's next request fail without being sent (the `readable()` check)."""
    async def run() -> None:
        srv = Server()
        srv.reply = b"action=OK\n\n"
        server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        base = service.defaults(config(tmp_path))
        settings = service.parse(f"{{ inet:127.0.0.1:{port}, try_limit=1 }}", base, "/q")
        client = PolicyClient(settings)
        warnings: list[str] = []
        pinned: dict[str, object] = {}
        srv.reply = b"action\n\n"  # "action" without "=": the empty line stays unread
        assert await client.request({"a": "1"}, warnings.append, pinned) is None
        endpoint = f"127.0.0.1:{port}"
        assert warnings == [f"missing value for string attribute action from {endpoint}",
                            f"problem talking to server {endpoint}: Application error"]
        assert srv.requests == 1 and settings.name in pinned
        assert await client.request({"a": "2"}, warnings.append, pinned) is None
        assert srv.requests == 1  # not sent: the connection has unread input
        assert warnings[-1] == f"problem talking to server {endpoint}: Application error"
        release(pinned)
        srv.reply = b"action=OK\n\n"
        assert await client.request({"a": "3"}, warnings.append, pinned) == b"OK"
        await client.close()
        await srv.close(server)
    asyncio.run(run())
