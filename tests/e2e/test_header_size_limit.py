"""header_size_limit: an over-long header is cut as Postfix's cleanup cuts it, the rest of the
message is kept. The expected shapes were read off a Maildir of the reference Postfix 3.7.11
for the same message (one 150,000-byte header line; one header folded over 2,000 lines)."""

from __future__ import annotations

import smtplib

from mailgate.server.headers import cut_long_headers

BIG = "X-Big: " + "a" * 150000 + "\r\n"
FOLDED = "X-Cont: start\r\n" + "".join(f" line{i} " + "b" * 70 + "\r\n" for i in range(2000))
MESSAGE = "Subject: hdr\r\n" + BIG + FOLDED + "X-After: yes\r\n\r\nbody\r\n"


def _header(lines: list[bytes], name: bytes) -> list[bytes]:
    start = next(n for n, line in enumerate(lines) if line.startswith(name))
    end = start + 1
    while lines[end][:1] in (b" ", b"\t"):
        end += 1
    return lines[start:end]


def test_long_headers_are_cut_like_postfix(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory().start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail("a@b.example", ["alice@example.test"], MESSAGE.encode())
    server.wait_log(r"^virtual: .* status=sent ")
    (path,) = server.maildir_files("alice")
    lines = path.read_bytes().split(b"\n")
    (big,) = _header(lines, b"X-Big:")
    assert len(big) == 102400  # 50 records of line_length_limit (2048) bytes
    folded = _header(lines, b"X-Cont:")
    assert len(folded) == 1278 and sum(len(x) + 1 for x in folded) - 1 == 102340
    assert folded[-1] == b" line1276 " + b"b" * 70  # whole lines only
    assert b"X-After: yes" in lines and lines[-2:] == [b"body", b""]


def test_short_header_blocks_are_left_alone() -> None:
    text = b"Subject: x\n" + b"X-A: " + b"a" * 5000 + b"\n\nbody\n"
    assert cut_long_headers(text, 102400, 2048) is text
    assert cut_long_headers(text, 3000, 2048) == b"Subject: x\nX-A: " + b"a" * 2043 + b"\n\nbody\n"
