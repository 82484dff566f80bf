"""The delivery helper's wire: requests matched to answers, a lost or lying peer handled."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

from mailgate.delivery.agent import DeliveryRequest, DeliveryResult, Status
from mailgate.delivery.helper import HelperAgent, HelperClient, parse_request, serve


def request(recipient: str, content: bytes = b"Subject: x\n\nbody\n") -> DeliveryRequest:
    return DeliveryRequest("ABC123", "s@example.test", recipient, recipient, 0, 1.5e9,
                           content, "/ignored/by/the/helper", False, uid=0, gid=0)


def test_concurrent_requests_get_their_own_answers() -> None:
    seen: list[tuple[str, DeliveryRequest]] = []

    async def deliver(transport: str, req: DeliveryRequest) -> DeliveryResult:
        seen.append((transport, req))
        await asyncio.sleep(0.01 if req.recipient.startswith("slow") else 0)
        if req.recipient.startswith("fail"):
            raise RuntimeError("disk on fire")
        return DeliveryResult(Status.SENT, "2.0.0", f"for {req.recipient}", transport)

    async def main() -> list[DeliveryResult]:
        ours, theirs = socket.socketpair()
        helper = asyncio.create_task(serve(theirs, deliver))
        client = HelperClient(ours)
        results = await asyncio.gather(
            HelperAgent("virtual", client).deliver(request("slow@example.test")),
            HelperAgent("local", client).deliver(request("fast@localhost", b"x" * 300_000)),
            HelperAgent("virtual", client).deliver(request("fail@example.test")))
        await client.close()
        await helper
        return list(results)

    slow, fast, failed = asyncio.run(main())
    assert (slow.status, slow.text, slow.relay) == (Status.SENT, "for slow@example.test", "virtual")
    assert (fast.text, fast.relay) == ("for fast@localhost", "local")
    assert failed.status is Status.DEFERRED and failed.dsn == "4.3.0"
    assert "disk on fire" in failed.text
    by_rcpt = {req.recipient: req for _, req in seen}
    assert by_rcpt["fast@localhost"].content == b"x" * 300_000
    # the worker's next hop and owner never cross the wire: the helper chooses them
    assert all(req.nexthop == "" and req.uid == -1 for req in by_rcpt.values())


def test_a_helper_that_is_gone_defers() -> None:
    async def main() -> DeliveryResult:
        ours, theirs = socket.socketpair()
        theirs.close()
        return await HelperAgent("virtual", HelperClient(ours)).deliver(request("a@b.test"))

    result = asyncio.run(main())
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.3.0")
    assert result.text == "maildir delivery failed: delivery helper unavailable"


# protocol fuzz seed 4283 (smtputf8_enable = no): MAIL FROM:<\xff@x.example> went to the helper
# as invalid UTF-8 JSON; the helper ended the conversation, and each later Maildir delivery
# wrote to the closed socket (RuntimeError: smtpd said "451 4.3.0 Error: queue file write error")
def test_an_8bit_address_crosses_the_wire_and_the_helper_stays() -> None:
    sender, recipient = "\udcff@x.example", "j\udcc3\udcb6rg@example.test"
    seen: list[DeliveryRequest] = []

    async def deliver(transport: str, req: DeliveryRequest) -> DeliveryResult:
        seen.append(req)
        return DeliveryResult(Status.SENT, "2.0.0", f"for {req.recipient}", transport)

    async def main() -> list[DeliveryResult]:
        ours, theirs = socket.socketpair()
        helper = asyncio.create_task(serve(theirs, deliver))
        client = HelperClient(ours)
        eight_bit = DeliveryRequest("ABC123", sender, recipient, recipient, 0, 1.5e9, b"x\n",
                                    "", False)
        results = [await asyncio.wait_for(HelperAgent("virtual", client).deliver(req), 5)
                   for req in (eight_bit, request("a@example.test"))]
        await client.close()
        await helper
        return results

    first, second = asyncio.run(main())
    assert (first.status, first.text) == (Status.SENT, f"for {recipient}")
    assert second.status is Status.SENT
    assert (seen[0].sender, seen[0].recipient) == (sender, recipient)


def test_requests_after_the_helper_went_away_are_deferred() -> None:
    async def deliver(transport: str, req: DeliveryRequest) -> DeliveryResult:
        return DeliveryResult(Status.SENT, "2.0.0", "ok", transport)

    async def main() -> list[DeliveryResult]:
        ours, theirs = socket.socketpair()
        helper = asyncio.create_task(serve(theirs, deliver))
        client = HelperClient(ours)
        agent = HelperAgent("virtual", client)
        results = [await agent.deliver(request("a@example.test"))]
        theirs.shutdown(socket.SHUT_RDWR)  # the helper goes away
        await helper
        assert client._reading is not None
        await client._reading  # ... and the worker has seen it go
        for _ in range(2):
            results.append(await asyncio.wait_for(agent.deliver(request("b@example.test")), 5))
        await client.close()
        return results

    first, *later = asyncio.run(main())
    assert first.status is Status.SENT
    for result in later:
        assert (result.status, result.dsn) == (Status.DEFERRED, "4.3.0")
        assert result.text == "maildir delivery failed: delivery helper unavailable"


def test_a_malformed_request_ends_the_conversation() -> None:
    called: list[str] = []

    async def deliver(transport: str, req: DeliveryRequest) -> DeliveryResult:
        called.append(transport)
        return DeliveryResult(Status.SENT, "2.0.0", "ok", transport)

    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        helper = asyncio.create_task(serve(theirs, deliver))
        header = json.dumps({"id": 1, "transport": "virtual", "queue_id": "Q",
                             "sender": "", "recipient": ["not", "a", "string"],
                             "original_recipient": "", "index": 0, "arrival": 1.0,
                             "recovered": False}).encode()
        reader, writer = await asyncio.open_connection(sock=ours)
        writer.write(struct.pack("!II", len(header), 0) + header)
        await helper
        data = await reader.read()
        writer.close()
        return data

    assert asyncio.run(main()) == b""  # no answer, connection closed
    assert called == []


def test_parse_request_checks_every_field() -> None:
    good = {"id": 1, "transport": "local", "queue_id": "Q", "sender": "", "recipient": "r@x",
            "original_recipient": "r@x", "index": 2, "arrival": 3, "recovered": True}
    transport, req = parse_request(good, b"body")
    assert transport == "local" and req.index == 2 and req.arrival == 3.0 and req.recovered
    for name, bad in (("index", "2"), ("arrival", "now"), ("recovered", 1), ("sender", None)):
        try:
            parse_request({**good, name: bad}, b"")
        except ValueError:
            continue
        raise AssertionError(f"{name}={bad!r} accepted")
