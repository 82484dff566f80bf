"""The DNS client's shared machinery: query IDs from os.urandom, one timer per server for
every waiting query, the concurrency limit (in turn, a cancelled waiter passes its slot on)."""

from __future__ import annotations

import asyncio

from mailgate.dns.resolver import OK, RETRY, Resolver, _Slots
from mailgate.dns.transport import ENTROPY, SOCKETS, Entropy, Server, _ask
from mailgate.dns.wire import question


def test_query_ids_are_16_bit_and_refilled() -> None:
    entropy = Entropy()
    ids = [entropy.u16() for _ in range(ENTROPY)]  # twice the buffer: one refill
    assert all(0 <= x < 65536 for x in ids)
    assert len(set(ids)) > ENTROPY * 0.9


def test_one_timer_ends_every_unanswered_query(dns_server: str) -> None:
    """Queries nobody answers end after their own timeout, in any order of timeouts;
    answered ones are not touched."""
    host, port = dns_server.rsplit(":", 1)

    async def run() -> None:
        server = Server(host, int(port))
        try:
            silent = question("x.timeout.mailgate.test", "A")
            waits = [_ask(server, silent, silent.lower(), t) for t in (0.3, 0.1, 0.2)]
            found = question("localhost", "A")
            results = await asyncio.gather(*waits, _ask(server, found, found.lower(), 5))
            assert results[:3] == [None, None, None]
            assert results[3] is not None and results[3].answer
            assert not any(sock.pending for sock in server.sockets)
        finally:
            server.close()

    asyncio.run(run())


def test_concurrency_limit_queues_queries(dns_server: str) -> None:
    async def run() -> None:
        resolver = Resolver([dns_server], timeout=2, concurrency=2)
        try:
            names = [f"{i}.wild.porcupine.org" for i in range(20)]
            answers = await asyncio.gather(*(resolver.query(n, "A") for n in names))
            assert all(a.status == OK for a in answers)
            timeout = await resolver.query("y.timeout.mailgate.test", "A")
            assert timeout.status == RETRY
        finally:
            resolver.close()

    asyncio.run(run())


def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    async def run() -> None:
        slots = _Slots(1)
        await slots.acquire()  # taken
        first = asyncio.create_task(slots.acquire())
        second = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # handed to `first`...
        first.cancel()  # ...which is cancelled before it runs: `second` gets the slot
        await asyncio.wait_for(second, 1)
        assert first.cancelled() and slots.free == 0
        slots.release()
        assert slots.free == 1

    asyncio.run(run())


def test_a_cancelled_caller_leaves_the_shared_query_running(dns_server: str) -> None:
    async def run() -> None:
        resolver = Resolver([dns_server], timeout=2)
        try:
            first = asyncio.create_task(resolver.query("good.mailgate.test", "A"))
            second = asyncio.create_task(resolver.query("good.mailgate.test", "A"))
            await asyncio.sleep(0)
            first.cancel()
            answer = await second
            assert first.cancelled()
            assert [r.data for r in answer.records] == ["127.0.0.10"]
            assert resolver.queries == 1
        finally:
            resolver.close()

    asyncio.run(run())


def test_a_burst_of_first_queries_opens_the_sockets_once(dns_server: str) -> None:
    host, port = dns_server.rsplit(":", 1)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        opened = []
        create = loop.create_datagram_endpoint

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            opened.append(1)
            return await create(*args, **kwargs)

        loop.create_datagram_endpoint = counting  # type: ignore[method-assign]
        server = Server(host, int(port))
        try:
            q = question("localhost", "A")
            replies = await asyncio.gather(*(_ask(server, q, q.lower(), 5) for _ in range(50)))
            assert all(reply is not None for reply in replies)
            assert len(opened) == len(server.sockets) == SOCKETS
        finally:
            server.close()

    asyncio.run(run())
