"""SMTP smuggling: every end-of-data look-alike of the public smuggling tools, inbound under each
smtpd_forbid_bare_newline value and outbound through the relay client, against what a live
Postfix 3.7.11 did with the same bytes (tests/data/smuggling/*.json, scripts/record-smuggling).

One server per setting serves all variants; one relay server sends every case to a capture
server that keeps the raw DATA bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Client, Server, wait_until
from mailgate.delivery.smtpclient import data_text
from mailgate.smtp.protocol import Message, ServerConnection, store_form
from support.smuggling import (
    OUTBOUND_BODIES,
    VARIANTS,
    Captured,
    CaptureServer,
    end_of_data_lookalikes,
    normalize_reply,
    outbound_message,
    play,
    relayed_part,
    send_raw,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "smuggling"
INBOUND = json.loads((DATA / "inbound.json").read_text())
OUTBOUND = json.loads((DATA / "outbound.json").read_text())
SETTINGS = ("no", "normalize", "yes", "reject")
# Postfix 3.7.11 with `no` ends DATA at <LF>.<LF> and the like (its recorded replies show the
# smuggled transaction executed); mailgate's `no` is `normalize` (decision 0002).
REFERENCE = {"no": "normalize", "normalize": "normalize", "yes": "yes", "reject": "reject"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for setting in SETTINGS:  # the client (127.0.0.1) is outside the exclusions
            started[setting] = Server(tmp_path_factory.mktemp(f"smuggle-{setting}"), extra={
                "smtpd_forbid_bare_newline": setting, "mynetworks": "10.9.9.0/24"}).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def delivered(server: Server, marker: str) -> list[bytes]:
    """Maildir files of alice and bob whose Subject is `marker` or `marker`-smuggled."""
    out = []
    for user in ("alice", "bob"):
        for path in server.maildir_files(user):
            text = path.read_bytes()
            if f"\nSubject: {marker}\n".encode() in text or \
                    f"\nSubject: {marker}-smuggled\n".encode() in text:
                out.append(text)
    return out


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("setting", SETTINGS)
def test_inbound_variant_never_ends_the_message(servers: dict[str, Server], setting: str,
                                                variant: str) -> None:
    server = servers[setting]
    replies = [normalize_reply(x) for x in play(server.port, VARIANTS[variant], variant)]
    expected = INBOUND[REFERENCE[setting]][variant]
    assert replies == expected["replies"], f"Postfix 3.7.11 ({REFERENCE[setting]}) differs"
    assert sum("queued as" in r for r in replies) == len(expected["delivered"]) <= 1
    if not expected["delivered"]:
        return
    wait_until(lambda: bool(delivered(server, variant)))
    (message,) = delivered(server, variant)  # one message: the smuggled one is text in it
    assert b"RCPT TO:<bob@example.test>\n" in message and b"\r" not in message
    assert not server.maildir_files("bob")


def test_postfix_no_is_the_vulnerable_mode_we_do_not_ship() -> None:
    """The recorded Postfix 3.7.11 `no` executes the smuggled commands for exactly these."""
    split = sorted(v for v, case in INBOUND["no"].items() if len(case["delivered"]) > 1)
    assert split == ["crcrlf.crcrlf", "crlf.crcrlf", "crlf.lf", "crlf.lfcr", "lf.crlf",
                     "lf.lf", "lf.lfcr", "lflf.lflf"]
    assert all(len(case["delivered"]) <= 1 for s in ("normalize", "yes", "reject")
               for case in INBOUND[s].values())


def test_reject_logs_as_postfix(servers: dict[str, Server]) -> None:
    server = servers["reject"]
    play(server.port, VARIANTS["lf.lf"], "logged")
    server.wait_log(r"reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: bare <LF> "
                    r"received; from=<sender@remote\.example> to=<alice@example\.test> "
                    r"proto=ESMTP helo=<client\.example>$")
    client = Client(server.port)
    client.reply()
    assert client.cmd(b"EHLO x\n") == "550 5.5.2 mx.example.test Error: bare <LF> received"
    assert client.closed()
    client.close()
    server.wait_log(r"NOQUEUE: reject: CONNECT from localhost\[127\.0\.0\.1\]: bare <LF> "
                    r"received; proto=SMTP$")


def test_exclusions_are_checked_again_after_xclient(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_forbid_bare_newline="reject",
                            smtpd_authorized_xclient_hosts="127.0.0.0/8").start()
    client = Client(server.port)
    client.reply()
    assert client.cmd(b"NOOP\n") == "250 2.0.0 Ok"  # 127.0.0.1 is in $mynetworks
    assert client.cmd("XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]").startswith("220 ")
    assert client.cmd(b"EHLO x\n") == "550 5.5.2 mx.example.test Error: bare <LF> received"
    assert client.closed()
    client.close()


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Captured]]]:
    """Every variant and OUTBOUND_BODIES case sent through a mailgate relay (normalize, the
    default) to a capture server; case name -> the messages captured for it."""
    capture = CaptureServer()
    server = Server(tmp_path_factory.mktemp("smuggle-relay"), extra={
        "transport_maps": f"inline:{{remote.example=smtp:[127.0.0.1]:{capture.port}}}"})
    try:
        server.start()
        queued = 0
        for name, variant in VARIANTS.items():
            replies = play(server.port, variant, name, rcpt=f"{name}@remote.example",
                           smuggled_rcpt=f"{name}-smuggled@remote.example")
            queued += sum("queued as" in r for r in replies)
        for name, body in OUTBOUND_BODIES.items():
            reply = send_raw(server.port, "sender@remote.example", f"{name}@remote.example",
                             outbound_message(name, body))
            queued += "queued as" in reply
        messages = capture.wait(queued)
        yield {name: [m for m in messages if f"<{name}@remote.example>" in " ".join(m.recipients)
                      or f"<{name}-smuggled@remote.example>" in " ".join(m.recipients)]
               for name in [*VARIANTS, *OUTBOUND_BODIES]}
    finally:
        server.stop()
        capture.close()


@pytest.mark.parametrize("case", [*VARIANTS, *OUTBOUND_BODIES])
def test_relay_sends_what_postfix_sends(relayed: dict[str, list[Captured]], case: str) -> None:
    (message,) = relayed[case]
    assert end_of_data_lookalikes(message.raw) == []
    (expected,) = OUTBOUND[case]["relayed"]
    assert relayed_part(message.raw) == expected.encode("latin-1")


def test_line_length_limit_zero_never_folds() -> None:
    assert data_text(b"." + b"x" * 3000 + b"\n", 0) == b".." + b"x" * 3000 + b"\r\n"
    assert data_text(b"abcdef\n", 4) == b"abcd\r\n ef\r\n"
    assert data_text(b"a\rb\nc", 998) == b"a b\r\nc\r\n"  # never a bare CR, never a bare LF


@pytest.mark.parametrize(("text", "queued"), [
    (b"a\rb\r\nc\r\r\n", b"a b\nc \n"),  # CR -> space, one CR of a CRLF dropped
    (b"x\r.\ry\r\n", b"x . y\n"),
    (b"a\n.\nb\r\n.\n\r\n", b"a\nb\n\n"),  # a lone dot touching a bare LF is dropped
    (b"..\r\n.\r\r\n", b".\n \n"),  # dot-unstuffed first
    (b"a\x00b\r\n", b"a\x00b\n"),
])
def test_message_text_is_queued_as_postfix_queues_it(text: bytes, queued: bytes) -> None:
    conn = ServerConnection()
    conn.start_data()
    conn.receive_data(text + b".\r\n")
    message = conn.next_event()
    assert isinstance(message, Message) and message.content == queued
    assert store_form(b"ab\r\r\ncd\r") == b"ab \ncd "  # BDAT: no dot handling


def test_lookalike_detector_finds_each_problem() -> None:
    assert end_of_data_lookalikes(b"a\r\n..\r\n...\r\n..b\r\n") == []
    assert end_of_data_lookalikes(b"a\r.\rb\r\n") == ["bare CR", "dot line"]
    assert end_of_data_lookalikes(b"a\n.\nb\r\n") == ["bare LF", "dot line"]
    assert end_of_data_lookalikes(b"a\r\n.b\r\n") == ["unstuffed leading dot"]
    assert end_of_data_lookalikes(b".\r\n") == ["unstuffed leading dot", "dot line"]
