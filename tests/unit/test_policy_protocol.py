"""The policy protocol reader and writer (sans-IO)."""

from __future__ import annotations

from mailgate.policy.protocol import (
    MAX_LINE,
    PolicyReader,
    ProtocolError,
    Request,
    encode,
    reply,
)

POSTFIX = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
           b"client_address=192.0.2.1\nclient_name=mail.example.com\nhelo_name=x\n"
           b"sender=a@example.com\nrecipient=b@example.net\nrecipient_count=0\n"
           b"queue_id=\ninstance=123.456.7\nsize=0\nfuture_attr=x=y\n\n")


def test_requests_split_anywhere_and_pipelined() -> None:
    reader = PolicyReader()
    data = POSTFIX * 3
    out = []
    for i in range(0, len(data), 7):  # arbitrary TCP segmentation
        out += reader.feed(data[i:i + 7])
    assert len(out) == 3 and all(isinstance(r, Request) for r in out)
    first = out[0]
    assert isinstance(first, Request)
    assert first.get("protocol_state") == "RCPT" and first.get("queue_id") == ""
    assert first.get("future_attr") == "x=y"  # unknown attributes kept, value after first =
    assert first.get("missing", "-") == "-"


def test_malformed_request_is_an_error_and_the_next_one_is_read() -> None:
    reader = PolicyReader()
    out = reader.feed(b"request=smtpd_access_policy\nno equals sign\nsender=x\n\n" + POSTFIX)
    assert isinstance(out[0], ProtocolError) and "malformed attribute line" in out[0].why
    assert isinstance(out[1], Request)


def test_over_long_line_is_an_error_without_unbounded_memory() -> None:
    reader = PolicyReader()
    out = reader.feed(b"sender=" + b"x" * (MAX_LINE * 4))
    assert out == [] and len(reader._buf) <= MAX_LINE * 4 + 16
    out = reader.feed(b"more\n\n" + POSTFIX)
    assert isinstance(out[0], ProtocolError) and isinstance(out[1], Request)


def test_crlf_and_empty_requests() -> None:
    reader = PolicyReader()
    assert reader.feed(b"\n\n") == []  # stray empty lines are no requests
    out = reader.feed(b"a=1\r\nb=2\r\n\r\n")
    assert out == [Request({"a": "1", "b": "2"})]


def test_encoding() -> None:
    assert reply("REJECT no\nway") == b"action=REJECT no way\n\n"
    assert encode({"a": "1", "b": ""}) == b"a=1\nb=\n\n"
