"""The accept process's hand-off: records, descriptors and the least-busy choice, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from mailgate.acceptor import Greeter, Handoff, _hand, client_address
from mailgate.anvil import ConnectionTable


@pytest.fixture
def handoffs() -> Iterator[Callable[[int], Handoff]]:
    made: list[Handoff] = []

    def make(workers: int) -> Handoff:
        made.append(Handoff(workers))
        return made[-1]

    yield make
    for handoff in made:
        handoff.close()


GREETER = Greeter(b"220 mx.example.test ESMTP mailgate\r\n", delay_reject=True,
                  max_connections=100, count_limit=50, rate_limit=0, rate_unit=60.0)


def _accepted(listener: socket.socket) -> tuple[socket.socket, socket.socket, object]:
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    conn, peer = listener.accept()
    return client, conn, peer


def test_a_connection_is_greeted_counted_and_handed_whole(handoffs: Callable[[int], Handoff]) -> None:
    handoff, table = handoffs(2), ConnectionTable()
    channels = [handoff.channel(0), handoff.channel(1)]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client, conn, peer = _accepted(listener)
        client.sendall(b"EHLO early\r\n")  # talks before the greeting
        sent = [0, 0]
        _hand(conn, peer, 0, handoff, table, GREETER, [handoff.sender(0), handoff.sender(1)],
              sent, 0)
        assert conn.fileno() == -1  # the accept process keeps no copy
        assert client.recv(100) == GREETER.greeting
        (handed,) = handoff.receive(0, channels[0]) + handoff.receive(1, channels[1])
        assert (handed.addr, handed.port) == client_address(client.getsockname())
        assert handed.greeted and (handed.count, handed.total) == (1, 1)
        assert handed.early == b"EHLO early\r\n" and handed.listener == 0
        handed.sock.sendall(b"250 ok\r\n")  # the worker's descriptor is the client's socket
        assert client.recv(100) == b"250 ok\r\n"
        handed.sock.close()
        client.close()


def test_no_early_greeting_when_the_client_is_over_its_limit(handoffs: Callable[[int], Handoff]) -> None:
    handoff, table = handoffs(1), ConnectionTable()
    greeter = Greeter(GREETER.greeting, True, 100, count_limit=1, rate_limit=0, rate_unit=60.0)
    channel = handoff.channel(0)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        clients = []
        for _ in range(2):
            client, conn, peer = _accepted(listener)
            clients.append(client)
            _hand(conn, peer, 0, handoff, table, greeter, [handoff.sender(0)], [0], 0)
        first, second = handoff.receive(0, channel)
        assert first.greeted and not second.greeted  # the worker refuses it with a 421
        assert (second.count, second.total) == (2, 2)
        clients[1].settimeout(0.2)
        try:
            data = clients[1].recv(100)
        except TimeoutError:
            data = b""
        assert data == b""  # nothing was sent to the client over its limit
        for item in (first, second):
            item.sock.close()
        for client in clients:
            client.close()


def test_the_least_busy_worker_is_chosen_and_ties_take_turns(handoffs: Callable[[int], Handoff]) -> None:
    handoff = handoffs(3)
    for index in range(3):
        handoff.channel(index)
    assert handoff.pick([0, 0, 0], 1) == [1, 2, 0]
    assert handoff.pick([2, 0, 1], 0) == [1, 2, 0]  # sent, not received yet, counts
    handoff._add(1, 0, 5)  # worker 1 runs five sessions
    assert handoff.pick([0, 0, 0], 0)[-1] == 1
    handoff.finished(1)
    handoff._add(1, 0, -10)  # never below zero
    assert handoff.pick([0, 0, 0], 1)[0] == 1


def test_a_full_channel_sends_the_connection_to_another_worker(handoffs: Callable[[int], Handoff]) -> None:
    handoff, table = handoffs(2), ConnectionTable()
    channels = [handoff.channel(0), handoff.channel(1)]
    senders = [handoff.sender(0), handoff.sender(1)]
    filler = b"x" * 4096
    while True:  # worker 0 stopped reading: its channel is full
        try:
            senders[0].send(filler)
        except BlockingIOError:
            break
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client, conn, peer = _accepted(listener)
        _hand(conn, peer, 0, handoff, table, GREETER, senders, [0, 0], 0)
        (handed,) = handoff.receive(1, channels[1])
        assert handed.addr == "127.0.0.1"
        handed.sock.close()
        client.close()
    channels[0].close()
