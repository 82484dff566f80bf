"""Headers smtpd and cleanup add: `Received:` in Postfix's form and missing Message-Id/Date/From."""

from __future__ import annotations

import re
import time

_HEADER = re.compile(rb"^[!-9;-~]+:")


def rfc2822_date(now: float) -> str:
    """`Wed, 25 Nov 2026 20:27:54 +0000 (UTC)` in local time, as Postfix's mail_date()."""
    t = time.localtime(now)
    offset = t.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    offset = abs(offset) // 60
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return (f"{days[t.tm_wday]}, {t.tm_mday} {months[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{offset // 60:02d}"
            f"{offset % 60:02d} ({t.tm_zone})")


def received_header(helo: str, name: str, addr: str, hostname: str, mail_name: str,
                    protocol: str, queue_id: str, recipients: list[str], now: float,
                    tls: str = "") -> bytes:
    """The `Received:` header smtpd prepends (smtpd.c: `for <rcpt>` only with one recipient;
    `tls`: the `(using ...)` lines of smtpd_tls_received_header)."""
    rfc_addr = f"IPv6:{addr}" if ":" in addr else addr
    text = (f"Received: from {helo or name} ({name} [{rfc_addr}])\n{tls}"
            f"\tby {hostname} ({mail_name}) with {protocol} id {queue_id}")
    if len(recipients) == 1:
        text += f"\n\tfor <{recipients[0]}>; {rfc2822_date(now)}\n"
    else:
        text += f"; {rfc2822_date(now)}\n"
    return text.encode("utf-8", "surrogateescape")


def scan_headers(content: bytes) -> tuple[int, bool, dict[bytes, bytes]]:
    """Find the end of the header block: (offset, ended by an empty line, first values by name).

    The block ends at an empty line or at the first line that is neither a header nor a
    continuation (then the body starts there without a separating empty line).
    """
    pos = 0
    seen: dict[bytes, bytes] = {}
    n = len(content)
    while pos < n:
        nl = content.find(b"\n", pos)
        end = n if nl < 0 else nl
        line = content[pos:end]
        if not line:
            return pos, True, seen
        if line[:1] in (b" ", b"\t"):
            if pos == 0:
                return 0, False, seen
        else:
            m = _HEADER.match(line)
            if m is None:
                return pos, False, seen
            name = line[: m.end() - 1].lower()
            seen.setdefault(name, line[m.end() :].strip())
        pos = end + 1
    return n, False, seen


def cut_long_headers(content: bytes, limit: int, record: int) -> bytes:
    """header_size_limit as Postfix's cleanup applies it: a header (with its continuation
    lines, joined by newlines) keeps the records that fit in `limit` bytes, the rest of it is
    discarded. A record is a physical line, or a `record`-byte piece (line_length_limit) of
    a longer one. Checked against Postfix 3.7.11: a 150,000-byte header keeps 50 records of
    2048 bytes; a folded one keeps its whole lines up to 102,400 bytes with the newlines."""
    if len(content) <= limit or limit <= 0 or record <= 0:
        return content  # the common case: no header can be longer than the whole message
    end, _, _ = scan_headers(content)
    if end <= limit:
        return content  # ... or than the whole header block
    out: list[bytes] = []
    size = 0
    dropping = False
    for line in content[:end].split(b"\n"):
        if line[:1] not in (b" ", b"\t"):  # a new header
            size, dropping = 0, False
            add = 0
        else:
            add = 1  # the newline that joins a continuation line
        if dropping:
            continue
        kept = 0
        for start in range(0, max(len(line), 1), record):
            piece = len(line[start:start + record])
            if size + add + piece > limit:
                dropping = True
                break
            size += add + piece
            add = 0
            kept = start + piece
        if kept or not dropping:
            out.append(line[:kept])
    return b"\n".join(out) + content[end:] if out else content[end:]


def add_missing_headers(content: bytes, queue_id: str, sender: str, hostname: str,
                        now: float) -> tuple[bytes, str]:
    """Add Message-Id, Date and From when missing (cleanup for local clients).

    Returns the new text and the Message-Id value to log.
    """
    end, blank, seen = scan_headers(content)
    added = []
    message_id = seen.get(b"message-id", b"").decode("utf-8", "surrogateescape")
    if not message_id:
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(now))
        message_id = f"<{stamp}.{queue_id}@{hostname}>"
        added.append(f"Message-Id: {message_id}\n")
    if b"date" not in seen:
        added.append(f"Date: {rfc2822_date(now)}\n")
    if b"from" not in seen:
        added.append(f"From: {sender or 'MAILER-DAEMON'}\n")
    if not added:
        return content, message_id
    extra = "".join(added).encode("utf-8", "surrogateescape")
    if end < len(content) and not blank:
        extra += b"\n"
    elif end == len(content) and end > 0 and not content.endswith(b"\n"):
        extra = b"\n" + extra
    return content[:end] + extra + content[end:], message_id


def logged_message_id(content: bytes) -> str:
    """The Message-Id header value, for cleanup's `message-id=` line ('' when absent)."""
    _, _, seen = scan_headers(content)
    return seen.get(b"message-id", b"").decode("utf-8", "surrogateescape")
