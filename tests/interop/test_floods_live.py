"""Floods in small, side by side with a live reference Postfix 3.7.11: a trickled command
line under a per-request deadline, too many recipients up to the hard error limit, and a
message over message_size_limit give the same replies and the same smtpd log lines."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import pytest

from conftest import REFERENCE_SCRIPT, Client, reference_postfix, wait_until
from support import reference

SETTINGS = {"smtpd_timeout": "2s", "smtpd_per_request_deadline": "yes",
            "smtpd_recipient_limit": "5", "smtpd_recipient_overshoot_limit": "3",
            "smtpd_error_sleep_time": "0", "message_size_limit": "10000"}
_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not REFERENCE_SCRIPT.exists(), reason="shared/ not present")]


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reference.Instance]:
    yield from reference_postfix(tmp_path_factory, "floods")


def trickle(port: int) -> list[str]:
    client = Client(port)
    stop = threading.Event()

    def send() -> None:
        for byte in b"EHLO " + b"a" * 100 + b"\r\n":
            if stop.wait(0.25):
                return
            try:
                client.sock.send(bytes([byte]))
            except OSError:
                return
    sender = threading.Thread(target=send)
    try:
        replies = [client.reply()[:4]]
        sender.start()
        replies.append(client.reply())
        replies.append("closed" if client.closed() else "open")
    finally:
        stop.set()
        if sender.is_alive():
            sender.join()
        client.close()
    return replies


def recipients(port: int) -> list[str]:
    client = Client(port)
    try:
        replies = [client.reply()[:4], client.cmd("EHLO x")[:4],
                   client.cmd("MAIL FROM:<s@remote.example>")]
        replies += [client.cmd("RCPT TO:<alice@example.test>") for _ in range(29)]
    finally:
        client.close()
    return replies


def too_big(port: int) -> list[str]:
    client = Client(port)
    try:
        replies = [client.reply()[:4], client.cmd("EHLO x")[:4]]
        for line in ("MAIL FROM:<s@remote.example>", "RCPT TO:<alice@example.test>", "DATA"):
            replies.append(client.cmd(line))
        client.send(b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 200)
        replies += [client.cmd("."), client.cmd("MAIL FROM:<s@remote.example> SIZE=20000"),
                    client.cmd("QUIT")]
    finally:
        client.close()
    return replies


@pytest.mark.parametrize("dialogue", [trickle, recipients, too_big],
                         ids=["trickle", "recipients", "too_big"])
def test_flood_replies_and_log_lines_match_postfix(
        server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
        dialogue: Callable[[int], list[str]]) -> None:
    skip = postfix.configure(SETTINGS)
    ours = server_factory(**SETTINGS).start()
    theirs_replies, our_replies = dialogue(postfix.port), dialogue(ours.port)
    assert [_QUEUE_ID.sub("QUEUEID", r) for r in our_replies] == \
        [_QUEUE_ID.sub("QUEUEID", r) for r in theirs_replies]
    wait_until(lambda: any("disconnect from" in x for x in reference.smtpd_lines(postfix.log,
                                                                                skip)))
    ours.wait_log("disconnect from")
    theirs = reference.smtpd_lines(postfix.log, skip)
    mine = [_QUEUE_ID.sub("QUEUEID", line) for line in ours.smtpd_log()]
    assert mine == theirs
    assert theirs[-1].startswith("disconnect from localhost[127.0.0.1]")
