"""The Dovecot auth client against a real Dovecot (Debian's dovecot-core), over its UNIX socket
and over TCP on 127.0.0.1: mechanisms, PLAIN, LOGIN, failures, cancel, restart, concurrency."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest

from conftest import dovecot_auth
from mailgate.sasl.dovecot import DovecotClient, Endpoint, parse_sasl_path
from mailgate.sasl.protocol import (
    CANNOT_CONNECT,
    CONNECTION_LOST,
    Challenge,
    Failure,
    SecurityOptions,
    Success,
    TemporaryFailure,
)
from support.dovecotauth import SOCKET, USERS, DovecotAuth

NOANONYMOUS = SecurityOptions.parse("noanonymous")
OFFERED = ("PLAIN", "LOGIN")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def plain(user: str, password: str) -> str:
    return b64(f"\0{user}\0{password}")


@pytest.fixture(scope="module")  # one Dovecot for the module (a test that stops it restarts it)
def dovecot() -> Iterator[DovecotAuth]:
    yield from dovecot_auth()


@pytest.fixture(params=["unix", "inet"])
def endpoint(request: pytest.FixtureRequest, dovecot: DovecotAuth) -> Endpoint:
    if request.param == "unix":  # relative to the base directory, as private/auth in Postfix
        return parse_sasl_path(f"{dovecot.run.name}/{SOCKET}", base=dovecot.top)
    return parse_sasl_path(f"inet:127.0.0.1:{dovecot.port}", base=dovecot.top)


def rip(endpoint: Endpoint, n: int) -> str:
    """A client address of its own per test and endpoint: Dovecot's auth penalty (a delay of
    seconds for an address that failed before) lives as long as the module's Dovecot."""
    return f"127.0.{1 if endpoint.unix else 2}.{n}"


def client_for(endpoint: Endpoint, warnings: list[str] | None = None,
               timeout: float = 10.0) -> DovecotClient:
    return DovecotClient(endpoint, timeout=timeout,
                         warn=warnings.append if warnings is not None else lambda _: None)


async def authenticate(client: DovecotClient, mechanism: str, response: str | None,
                       rip: str = "127.0.0.1") -> Success | Failure | TemporaryFailure | Challenge:
    exchange = client.exchange(mechanism, offered=OFFERED, local_addr="127.0.0.1", remote_addr=rip)
    return await exchange.step(response)


def test_mechanisms_are_dovecots(endpoint: Endpoint) -> None:
    async def run() -> tuple[tuple[str, ...], tuple[str, ...]]:
        client = client_for(endpoint)
        try:
            return (await client.mechanisms(NOANONYMOUS),
                    await client.mechanisms(SecurityOptions.parse("noplaintext")))
        finally:
            await client.close()

    default, noplaintext = asyncio.run(run())
    assert default == ("PLAIN", "LOGIN")
    assert noplaintext == ()  # both are flagged plaintext by Dovecot


def test_plain_with_initial_response(endpoint: Endpoint) -> None:
    async def run() -> list[object]:
        client = client_for(endpoint)
        try:
            return [await authenticate(client, "PLAIN", plain("alice@example.test", "secret")),
                    await authenticate(client, "plain", plain("bob", USERS["bob"]))]
        finally:
            await client.close()

    assert asyncio.run(run()) == [Success("alice@example.test"), Success("bob")]


def test_login_is_a_multi_step_exchange(endpoint: Endpoint) -> None:
    async def run() -> list[object]:
        client = client_for(endpoint)
        exchange = client.exchange("LOGIN", offered=OFFERED, local_addr="127.0.0.1",
                                   remote_addr="127.0.0.1", secured=True)
        try:
            steps: list[object] = [await exchange.step()]
            steps.append(exchange.done)
            steps.append(await exchange.step(b64("bob")))
            steps.append(await exchange.step(b64(USERS["bob"])))
            steps.append(exchange.done)
            return steps
        finally:
            await client.close()

    assert asyncio.run(run()) == [Challenge(b64("Username:")), False,
                                  Challenge(b64("Password:")), Success("bob"), True]


def test_plain_without_initial_response_gets_an_empty_challenge(endpoint: Endpoint) -> None:
    async def run() -> list[object]:
        client = client_for(endpoint)
        exchange = client.exchange("PLAIN", offered=OFFERED, local_addr="127.0.0.1",
                                   remote_addr="127.0.0.1")
        try:
            return [await exchange.step(), await exchange.step(plain("bob", USERS["bob"]))]
        finally:
            await client.close()

    assert asyncio.run(run()) == [Challenge(""), Success("bob")]


def test_wrong_password_and_unknown_user_fail(endpoint: Endpoint) -> None:
    # Each failure from its own client address: Dovecot delays the answers to an address
    # that failed before (its auth penalty), up to 15 seconds.
    async def run() -> list[object]:
        client = client_for(endpoint)
        try:
            return [await authenticate(client, "PLAIN", plain("alice@example.test", "wrong"),
                                       rip=rip(endpoint, 11)),
                    await authenticate(client, "PLAIN", plain("nobody", "x"),
                                       rip=rip(endpoint, 12)),
                    await authenticate(client, "PLAIN", plain("bob", USERS["bob"]))]
        finally:
            await client.close()

    wrong, unknown, after = asyncio.run(run())
    # Dovecot 2.3 sends no reason= for either, only the user it looked up.
    assert wrong == Failure("", user="alice@example.test")
    assert unknown == Failure("", user="nobody")
    assert after == Success("bob")  # the connection is still good


def test_garbage_in_a_continued_response_fails(endpoint: Endpoint) -> None:
    async def run() -> object:
        client = client_for(endpoint)
        exchange = client.exchange("PLAIN", offered=OFFERED, local_addr="127.0.0.1",
                                   remote_addr=rip(endpoint, 13))
        try:
            await exchange.step()
            return await exchange.step(b64("no NULs here"))
        finally:
            await client.close()

    assert asyncio.run(run()) == Failure("")


def test_a_cancelled_exchange_is_forgotten(endpoint: Endpoint) -> None:
    async def run() -> list[object]:
        client = client_for(endpoint)
        try:
            exchange = client.exchange("LOGIN", offered=OFFERED, local_addr="127.0.0.1",
                                       remote_addr="127.0.0.1")
            first = await exchange.step()
            exchange.cancel()
            conn = await client.connection()
            waiting = dict(conn.waiting)
            # the next session's AUTH on the same connection is unaffected
            return [first, exchange.done, waiting,
                    await authenticate(client, "LOGIN", None),
                    await authenticate(client, "PLAIN", plain("bob", USERS["bob"]))]
        finally:
            await client.close()

    first, done, waiting, login, after = asyncio.run(run())
    assert first == Challenge(b64("Username:")) and done is True and waiting == {}
    assert login == Challenge(b64("Username:"))
    assert after == Success("bob")


def test_stopped_dovecot_is_a_temporary_failure_then_the_client_reconnects(
        endpoint: Endpoint, dovecot: DovecotAuth) -> None:
    warnings: list[str] = []

    async def run() -> list[object]:
        client = client_for(endpoint, warnings)
        try:
            results: list[object] = [await authenticate(client, "PLAIN", plain("bob", "hunter2"))]
            await asyncio.to_thread(dovecot.stop)
            results.append(await authenticate(client, "PLAIN", plain("bob", "hunter2")))
            results.append(await authenticate(client, "PLAIN", plain("bob", "hunter2")))
            await asyncio.to_thread(dovecot.start)
            results.append(await authenticate(client, "PLAIN", plain("bob", "hunter2")))
            return results
        finally:
            await client.close()

    before, lost, stopped, restarted = asyncio.run(run())
    assert before == Success("bob")
    # The first request after the end is told the connection was lost (as Postfix, which
    # writes to it and reads its end); the next one finds nothing to connect to, and leaves
    # the session's SASL text as it was (sets_reply false), as Postfix's failed connect.
    assert lost == TemporaryFailure(CONNECTION_LOST)
    assert stopped == TemporaryFailure(CANNOT_CONNECT, sets_reply=False)
    assert restarted == Success("bob")
    assert any(w.startswith(f"SASL: Connect to Dovecot auth socket '{endpoint.name}' failed: ")
               for w in warnings), warnings


def test_concurrent_requests_share_one_connection(endpoint: Endpoint) -> None:
    users = [("bob", USERS["bob"], "bob"), ("alice@example.test", "secret", "alice@example.test")]

    async def run() -> tuple[list[object], int]:
        client = client_for(endpoint)
        try:
            conn = await client.connection()
            results = await asyncio.gather(*(
                authenticate(client, "PLAIN", plain(*users[i % 2][:2])) for i in range(40)))
            return list(results), int(conn is await client.connection())
        finally:
            await client.close()

    results, same = asyncio.run(run())
    assert results == [Success(users[i % 2][2]) for i in range(40)]
    assert same == 1  # no second connection was opened


def test_the_auth_master_socket_is_the_wrong_socket(dovecot: DovecotAuth) -> None:
    warnings: list[str] = []

    async def run() -> object:
        client = client_for(parse_sasl_path(str(dovecot.run / "auth-master"), base=dovecot.top),
                            warnings)
        return await authenticate(client, "PLAIN", plain("bob", USERS["bob"]))

    assert asyncio.run(run()) == TemporaryFailure(CANNOT_CONNECT, sets_reply=False)
    assert warnings == [
        "SASL: Connected to wrong auth socket (auth-master instead of auth-client)"]


def test_a_slow_reply_times_out_and_the_connection_goes_on(dovecot: DovecotAuth) -> None:
    # Dovecot delays its answer to an address's second failure by seconds (its auth penalty):
    # that request times out, while the others on the connection are answered.
    warnings: list[str] = []
    endpoint = parse_sasl_path(f"inet:127.0.0.1:{dovecot.port}", base=dovecot.top)

    async def run() -> list[object]:
        client = client_for(endpoint, warnings, timeout=1.5)
        try:
            first = await authenticate(client, "PLAIN", plain("bob", "wrong"), rip="127.0.0.21")
            slow = asyncio.create_task(
                authenticate(client, "PLAIN", plain("bob", "wrong"), rip="127.0.0.21"))
            quick = await authenticate(client, "PLAIN", plain("bob", USERS["bob"]))
            late = await slow
            conn = await client.connection()
            return [first, quick, late, conn.alive, dict(conn.waiting)]
        finally:
            await client.close()

    first, quick, late, alive, waiting = asyncio.run(run())
    assert first == Failure("", user="bob")
    assert quick == Success("bob")
    assert late == TemporaryFailure(CONNECTION_LOST)
    assert alive is True and waiting == {}  # the timed-out request is forgotten
    assert any(w.startswith("SASL: timeout waiting for Dovecot auth socket") for w in warnings)
