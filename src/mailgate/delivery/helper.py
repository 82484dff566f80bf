"""The delivery helper's wire: workers running as mail_owner ask a root process to write Maildirs.

Requests and answers travel over one UNIX stream socket per worker: an 8-byte head (header
length, content length), a JSON header, then the message content. JSON, never pickle: the
helper is root and must not run what a compromised worker sends; it also chooses the
mailbox and its owner again from its own tables (decision 0059), so a worker can only ask
for what the tables already allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from mailgate.delivery.agent import DeliveryRequest, DeliveryResult, Status

_HEAD = struct.Struct("!II")
_ANSWER = struct.Struct("!I")
_HEADER_LIMIT = 1 << 16  # bytes of one JSON header
_CONTENT_LIMIT = 1 << 32  # the head's field size: a message larger than 4 GiB never arrives


class HelperClient:
    """A worker's connection to its delivery helper, shared by the Maildir transports;
    requests run concurrently, answers are matched by id."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seq = 0
        self._reading: asyncio.Task[None] | None = None
        self._lost = False

    async def _connect(self) -> asyncio.StreamWriter | None:
        """The connection to the helper; None once it is lost (the helper is gone)."""
        if self._lost:
            return None
        if self._writer is not None:
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent first requests: one connection
            if self._writer is None and not self._lost:
                reader, self._writer = await asyncio.open_connection(sock=self.sock)
                self._reading = asyncio.get_running_loop().create_task(self._read(reader))
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size = _ANSWER.unpack(await reader.readexactly(_ANSWER.size))[0]
                answer = json.loads(await reader.readexactly(size))
                future = self._waiting.pop(int(answer["id"]), None)
                if future is not None and not future.done():
                    future.set_result(answer)
        except (asyncio.IncompleteReadError, OSError, ValueError, KeyError):
            pass
        self._lost = True
        for future in self._waiting.values():
            if not future.done():
                future.set_result({})
        self._waiting.clear()

    async def ask(self, transport: str, request: DeliveryRequest) -> DeliveryResult:
        """Deliver `request` through the helper; a helper that is gone defers it."""
        writer = await self._connect()
        if writer is None or writer.is_closing():
            return _unavailable(transport)
        self._seq += 1
        # ASCII JSON: an 8-bit address (smtputf8_enable = no) holds surrogates, which
        # travel as \udcXX escapes and come back as the same text
        header = json.dumps({
            "id": self._seq, "transport": transport, "queue_id": request.queue_id,
            "sender": request.sender, "recipient": request.recipient,
            "original_recipient": request.original_recipient, "index": request.index,
            "arrival": request.arrival, "recovered": request.recovered,
        }).encode("ascii")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._seq] = future
        writer.write(_HEAD.pack(len(header), len(request.content)) + header)
        writer.write(request.content)
        answer = await future
        if not answer:
            return _unavailable(transport)
        return DeliveryResult(Status(answer["status"]), answer["dsn"], answer["text"],
                              answer["relay"])

    async def close(self) -> None:
        """End the conversation: the helper finishes what it has and exits."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        else:
            self.sock.close()
        if self._reading is not None:
            await self._reading


def _unavailable(transport: str) -> DeliveryResult:
    return DeliveryResult(Status.DEFERRED, "4.3.0",
                          "maildir delivery failed: delivery helper unavailable", transport)


class HelperAgent:
    """A Maildir transport (virtual, local) whose files a root helper writes."""

    direct = True  # as MaildirAgent: fast and local (decision 0047)

    def __init__(self, name: str, client: HelperClient) -> None:
        self.name = name
        self.client = client

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        return await self.client.ask(self.name, request)


Deliver = Callable[[str, DeliveryRequest], Awaitable[DeliveryResult]]


def parse_request(header: dict[str, Any], content: bytes) -> tuple[str, DeliveryRequest]:
    """A worker's request, every field checked for its type (ValueError if one is wrong);
    the next hop and owner are left for the helper to choose."""
    def text(name: str) -> str:
        value = header.get(name)
        if not isinstance(value, str):
            raise ValueError(f"bad request field {name}")
        return value

    index, arrival = header.get("index"), header.get("arrival")
    if not isinstance(index, int) or not isinstance(arrival, int | float) \
            or not isinstance(header.get("recovered"), bool):
        raise ValueError("bad request fields")
    return text("transport"), DeliveryRequest(
        text("queue_id"), text("sender"), text("recipient"), text("original_recipient"),
        index, float(arrival), content, "", bool(header["recovered"]))


async def serve(sock: socket.socket, deliver: Deliver) -> None:
    """The helper's side: answer requests until the worker closes the connection, then
    finish the deliveries in progress. A malformed request ends the conversation."""
    reader, writer = await asyncio.open_connection(sock=sock)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(ident: int, transport: str, request: DeliveryRequest) -> None:
        try:
            result = await deliver(transport, request)
        except Exception as exc:  # every request gets its answer: a deferral, then a retry
            result = DeliveryResult(Status.DEFERRED, "4.3.0",
                                    f"maildir delivery failed: {exc!r}", transport)
        data = json.dumps({"id": ident, "status": result.status.value, "dsn": result.dsn,
                           "text": result.text, "relay": result.relay}).encode("ascii")
        writer.write(_ANSWER.pack(len(data)) + data)

    try:
        while True:
            header_size, content_size = _HEAD.unpack(await reader.readexactly(_HEAD.size))
            if header_size > _HEADER_LIMIT:
                break
            header = json.loads(await reader.readexactly(header_size))
            content = await reader.readexactly(content_size)
            if not isinstance(header, dict) or not isinstance(header.get("id"), int):
                break
            transport, request = parse_request(header, content)
            task = asyncio.get_running_loop().create_task(
                answer(header["id"], transport, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except (asyncio.IncompleteReadError, OSError, ValueError):
        pass
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()
