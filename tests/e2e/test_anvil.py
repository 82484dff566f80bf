"""anvil beyond Postfix 3.7, end to end: clients counted by network, statistics at stop, reloads."""

from __future__ import annotations

import re
import signal

from conftest import Client, Server

_AT = r"at \w{3} [ \d]\d \d\d:\d\d:\d\d"


def _mail(server: Server, source: str) -> str:
    client = Client(server.port, source=source)
    try:
        client.reply()
        client.cmd("EHLO client.example")
        reply = client.cmd("MAIL FROM:<s@client.example>")
        client.cmd("QUIT")
        return reply
    finally:
        client.close()


def _anvil(server: Server) -> list[str]:
    return [line[len("anvil: "):] for line in server.log() if line.startswith("anvil: ")]


def test_one_network_counts_as_one_client_and_statistics_come_at_stop(server_factory) -> None:  # type: ignore[no-untyped-def]
    """smtpd_client_ipv4_prefix_length = 24 (Postfix 3.8's): two addresses of one /24 share
    the message rate; the replies and warnings still name the address. The statistics
    name the network, and are logged when mailgate stops (anvil logs at its exit)."""
    server = server_factory(smtpd_client_message_rate_limit="1",
                            smtpd_client_ipv4_prefix_length="24", mynetworks="192.0.2.0/24",
                            anvil_status_update_time="3600s").start()
    assert _mail(server, "127.0.0.70") == "250 2.1.0 Ok"
    server.wait_log("disconnect from unknown")  # (one connection at a time: a count of 1)
    assert _mail(server, "127.0.0.71") == "450 4.7.1 Error: too much mail from 127.0.0.71"
    server.wait_log(r"warning: Message delivery request rate limit exceeded: 2 from "
                    r"unknown\[127\.0\.0\.71\] for service 127\.0\.0\.1:\d+$")
    server.wait_log("disconnect from unknown", count=2)
    assert _anvil(server) == []  # not due before an hour
    server.stop()
    ident = rf"\(127\.0\.0\.1:{server.port}:127\.0\.0\.0/24\)"
    expected = [rf"statistics: max connection rate 2/60s for {ident} {_AT}",
                rf"statistics: max connection count 1 for {ident} {_AT}",
                rf"statistics: max message rate 2/60s for {ident} {_AT}",
                rf"statistics: max cache size 1 {_AT}"]
    lines = _anvil(server)
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_the_counts_outlive_a_reload(server_factory) -> None:  # type: ignore[no-untyped-def]
    """The table belongs to the master: a reload (new workers) keeps every client's window."""
    server = server_factory(smtpd_client_message_rate_limit="1",
                            mynetworks="192.0.2.0/24").start()
    assert _mail(server, "127.0.0.72") == "250 2.1.0 Ok"
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"master: reload -- version")
    assert _mail(server, "127.0.0.72") == "450 4.7.1 Error: too much mail from 127.0.0.72"
