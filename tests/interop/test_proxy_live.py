"""Differential: sessions behind the PROXY protocol (smtpd_upstream_proxy_protocol = haproxy),
headers v1 and v2, good and broken, played to mailgate and to a live Postfix 3.7: same
replies, same smtpd log lines, and the proxied client is the one restrictions see."""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import reference_postfix, wait_until
from support import reference
from support.livesession import Step, compare, log_lines, play
from support.reference import Instance

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, src: str, dst: str, sport: int, dport: int,
       extra: bytes = b"") -> bytes:
    body = (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport)) if family else b""
    body += extra
    return SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


SESSION: list[Step] = [("R", b""), ("C", b"EHLO client.example"),
                       ("C", b"MAIL FROM:<a@client.example>"),
                       ("C", b"RCPT TO:<alice@example.test>"), ("C", b"QUIT")]
SCRIPTS: dict[str, list[Step]] = {
    "v1": [("P", b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n"), *SESSION],
    # the reference instance has inet_protocols = ipv4: TCP6 is refused, as it says
    "v1-tcp6": [("P", b"PROXY TCP6 2001:DB8::a ::1 40000 25\r\n"), ("R", b"")],
    "v1-mapped": [("P", b"PROXY TCP6 ::ffff:192.0.2.10 ::1 40000 25\r\n"), ("R", b"")],
    "v1-pipelined": [("P", b"PROXY TCP4 192.0.2.11 127.0.0.1 40000 25\r\nEHLO x\r\n"),
                     *SESSION],
    "v2": [("P", v2(1, 0x11, "192.0.2.10", "127.0.0.1", 40001, 25)), *SESSION],
    "v2-tcp6": [("P", v2(1, 0x21, "2001:db8::b", "::1", 40002, 25, b"\x04\x00\x01x")),
                ("R", b"")],
    "v2-local": [("P", v2(0, 0x00, "", "", 0, 0)), *SESSION],
    "unknown": [("P", b"PROXY UNKNOWN\r\n"), ("R", b"")],
    "bad-address": [("P", b"PROXY TCP4 192.0.2.300 127.0.0.1 1 25\r\n"), ("R", b"")],
    "bad-port": [("P", b"PROXY TCP4 192.0.2.3 127.0.0.1 1 x\r\n"), ("R", b"")],
    "no-terminator": [("P", b"PROXY TCP4 192.0.2.3 127.0.0.1 1 25"), ("R", b"")],
    "smtp-instead": [("P", b"EHLO client.example\r\n"), ("R", b"")],
    "short": [("P", b"\r\n\r\n"), ("R", b"")],
    "v2-bad-command": [("P", v2(5, 0x11, "192.0.2.10", "127.0.0.1", 1, 25)), ("R", b"")],
    "v2-udp": [("P", v2(1, 0x12, "192.0.2.10", "127.0.0.1", 1, 25)), ("R", b"")],
    "v2-short-body": [("P", SIGNATURE + b"\x21\x11\x00\x20" + b"\x00" * 8), ("R", b"")],
}
SETTINGS = {"smtpd_upstream_proxy_protocol": "haproxy", "smtpd_upstream_proxy_timeout": "2s",
            "inet_protocols": "ipv4",
            "smtpd_client_restrictions":
            "check_client_access inline:{ {192.0.2.10=REJECT proxied client} }"}


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "proxy")


def normalized(lines: list[str]) -> list[str]:
    return [re.sub(r"(\[127\.0\.0\.1\]|\[::1\]):\d+", r"\1:PORT", x) for x in lines]


@pytest.mark.interop
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_proxy_sessions_match_postfix(server_factory, postfix: Instance,  # type: ignore[no-untyped-def]
                                      name: str) -> None:
    settings = {**reference.read_settings(DATA / "main.cf"), **SETTINGS}
    skip = postfix.configure(settings)
    theirs = play(postfix.port, SCRIPTS[name])
    wait_until(lambda: any("disconnect from" in x or "haproxy read" in x
                           for x in log_lines(postfix.log, skip)))
    server = server_factory(**settings).start()
    ours = play(server.port, SCRIPTS[name])
    wait_until(lambda: any("disconnect from" in x or "haproxy read" in x
                           for x in log_lines(server.log_path)))
    compare(name, (("replies", theirs, ours),
                   ("smtpd log", normalized(log_lines(postfix.log, skip)),
                    normalized(log_lines(server.log_path)))))


@pytest.mark.interop
def test_a_late_header_matches_postfix(server_factory, postfix: Instance) -> None:  # type: ignore[no-untyped-def]
    settings = {**reference.read_settings(DATA / "main.cf"), **SETTINGS,
                "smtpd_upstream_proxy_timeout": "1s"}

    def silent(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            return sock.recv(1000)

    skip = postfix.configure(settings)
    theirs = silent(postfix.port)
    wait_until(lambda: any("haproxy read" in x for x in log_lines(postfix.log, skip)))
    server = server_factory(**settings).start()
    ours = silent(server.port)
    wait_until(lambda: any("haproxy read" in x for x in log_lines(server.log_path)))
    compare("late", (("replies", [theirs.decode()], [ours.decode()]),
                     ("smtpd log", log_lines(postfix.log, skip), log_lines(server.log_path))))
