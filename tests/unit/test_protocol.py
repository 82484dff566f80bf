"""The sans-IO SMTP core, byte by byte: commands, DATA, smuggling, limits, BDAT."""

from __future__ import annotations

import pytest

from mailgate.smtp.protocol import (
    NEED_DATA,
    Chunk,
    Closed,
    Command,
    Message,
    Mode,
    ProtocolError,
    ServerConnection,
)


def events(conn: ServerConnection) -> list[object]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, Closed):
            break
    return out


def data_of(body: bytes, limit: int = 10240000) -> Message:
    conn = ServerConnection(message_size_limit=limit)
    conn.start_data()
    conn.receive_data(body)
    got = events(conn)
    assert len(got) == 1 and isinstance(got[0], Message), got
    return got[0]


def test_commands_split_on_crlf_and_bare_lf() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO x\r\nNOOP\nmail FROM:<a@b>\r\n")
    cmds = events(conn)
    assert [c.verb for c in cmds if isinstance(c, Command)] == ["EHLO", "NOOP", "MAIL"]
    assert [c.bare_newline for c in cmds if isinstance(c, Command)] == [False, True, False]
    assert [t.value for t in cmds[2].tokens] == ["mail", "FROM:", "<a@b>"]  # type: ignore[attr-defined]


def test_partial_command_waits_for_more_bytes() -> None:
    conn = ServerConnection()
    conn.receive_data(b"NO")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"OP\r\n")
    assert isinstance(conn.next_event(), Command)


def test_long_line_is_cut_and_the_rest_skipped_without_buffering_it() -> None:
    conn = ServerConnection(line_length_limit=10)
    conn.receive_data(b"NOOP " + b"x" * 100)
    assert conn.next_event() is NEED_DATA
    assert len(conn.buffered(1000)) == 0  # nothing beyond the limit is kept
    conn.receive_data(b"y" * 100 + b"\r\nQUIT\r\n")
    first, second = events(conn)
    assert isinstance(first, Command) and first.too_long and first.line == "NOOP xxxxx"
    assert isinstance(second, Command) and second.verb == "QUIT"


def test_nul_ends_the_command_and_bad_utf8_is_flagged() -> None:
    conn = ServerConnection()
    conn.receive_data(b"NOOP\x00junk\r\nMAIL FROM:<\xfc@x>\r\n")
    first, second = events(conn)
    assert isinstance(first, Command) and first.line == "NOOP"
    assert isinstance(second, Command) and second.bad_utf8


def test_data_dot_unstuffing_and_lf_storage() -> None:
    msg = data_of(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n")
    assert msg.content == b"Subject: x\n\n.leading dot\n"
    assert not msg.too_big


def test_empty_message() -> None:
    assert data_of(b".\r\n").content == b""


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n"])
def test_smuggling_sequences_never_end_the_message(smuggle: bytes) -> None:
    body = b"A\r\nB" + smuggle + b"MAIL FROM:<evil@x>\r\nC\r\n.\r\n"
    msg = data_of(body)
    assert b"MAIL FROM:<evil@x>" in msg.content
    assert msg.content.endswith(b"C\n")


def test_terminator_split_across_reads() -> None:
    conn = ServerConnection()
    conn.start_data()
    for piece in (b"line\r", b"\n", b".", b"\r", b"\n"):
        assert conn.next_event() is NEED_DATA
        conn.receive_data(piece)
    msg = conn.next_event()
    assert isinstance(msg, Message) and msg.content == b"line\n"
    assert conn.mode is Mode.COMMAND


def test_pipelined_command_after_data_stays_buffered() -> None:
    conn = ServerConnection()
    conn.start_data()
    conn.receive_data(b"x\r\n.\r\nQUIT\r\n")
    msg, cmd = events(conn)
    assert isinstance(msg, Message) and isinstance(cmd, Command) and cmd.verb == "QUIT"


def test_oversized_message_is_read_but_not_kept() -> None:
    conn = ServerConnection(message_size_limit=1000)
    conn.start_data()
    for _ in range(100):
        conn.receive_data(b"y" * 998 + b"\r\n")
        assert conn.next_event() is NEED_DATA
        assert len(conn.buffered(10**6)) < 2100  # memory stays bounded
    conn.receive_data(b".\r\n")
    msg = conn.next_event()
    assert isinstance(msg, Message) and msg.too_big and msg.content == b""


def test_connection_lost_inside_data_reports_bytes() -> None:
    conn = ServerConnection()
    conn.start_data()
    conn.receive_data(b"abc\r\n")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    event = conn.next_event()
    assert isinstance(event, Closed) and event.data_bytes == 5


def test_bdat_chunks() -> None:
    conn = ServerConnection()
    conn.start_chunk(5, last=False)
    conn.receive_data(b"Hi\r\nBDAT")
    chunk = conn.next_event()
    assert chunk == Chunk(b"Hi\r\nB", False)
    conn.receive_data(b" 3 LAST\r\n")
    cmd = conn.next_event()
    assert isinstance(cmd, Command) and cmd.line == "DAT 3 LAST"


def test_bdat_discard_reads_without_keeping() -> None:
    conn = ServerConnection()
    conn.start_chunk(10, last=True, discard=True)
    conn.receive_data(b"0123456789NOOP\r\n")
    assert conn.next_event() == Chunk(b"", True)
    assert isinstance(conn.next_event(), Command)


def test_misuse_raises_local_error() -> None:
    conn = ServerConnection()
    conn.start_data()
    with pytest.raises(ProtocolError):
        conn.start_data()


def test_send_formats_single_and_multiline_replies() -> None:
    assert ServerConnection().send(250, "Ok") == b"250 Ok\r\n"
    assert ServerConnection().send(250, ["a", "b"]) == b"250-a\r\n250 b\r\n"


def test_sending_354_starts_the_message_text() -> None:
    conn = ServerConnection()
    conn.receive_data(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert isinstance(conn.next_event(), Command)
    conn.send(354, "End data with <CR><LF>.<CR><LF>")
    assert conn.mode is Mode.DATA
    with pytest.raises(ProtocolError):  # a second 354 inside the text: the caller's bug
        conn.send(354, "twice")
    message = conn.next_event()
    assert isinstance(message, Message) and message.content == b"Subject: x\n\nbody\n"
    assert isinstance(conn.next_event(), Command) and conn.mode is Mode.COMMAND
