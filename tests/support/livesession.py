"""Play a scripted SMTP session (with STARTTLS or wrapper mode) to a server and collect what a
differential test compares: replies, smtpd log lines, the `Received:` header delivered."""

from __future__ import annotations

import difflib
import re
import socket
import ssl
from pathlib import Path

from support import reference

HOSTNAME = "mx.example.test"
Step = tuple[str, bytes]  # ("C", command) | ("TLS", b"") | ("R", b"") | ("P", raw bytes)


def _reply(f: object) -> bytes:
    out = b""
    while True:
        line: bytes = f.readline()  # type: ignore[attr-defined]
        out += line
        if not line or line[3:4] != b"-":
            return out


def play(port: int, steps: list[Step], ca: Path | None = None, source: str = "",
         identities: dict[bytes, tuple[Path, Path]] | None = None) -> list[str]:
    """The replies to `steps` (`source`: the client's own loopback address); a `TLS` step
    whose data names one of `identities` presents that (certificate, key)."""
    def context(identity: bytes) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.check_hostname = False
        if identity:
            cert, key = (identities or {})[identity]
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                    source_address=(source, 0) if source else None)
    wrapper = steps[0][0] in ("TLS", "P")  # (no greeting before a TLS hello or raw bytes)
    f = sock.makefile("rb")
    out = [] if wrapper else [_reply(f).decode()]
    for kind, data in steps:
        if kind == "TLS":
            sock = context(data).wrap_socket(sock, server_hostname=HOSTNAME)
            f = sock.makefile("rb")
        elif kind == "R":
            out.append(_reply(f).decode())
        elif kind == "P":
            sock.sendall(data)
        else:
            sock.sendall(data + b"\r\n")
            out.append(_reply(f).decode())
    sock.close()
    return [re.sub(r"queued as [0-9A-F]+", "queued as QUEUEID", r) for r in out]


def received(mail: Path) -> str:
    files = list((mail / "example.test" / "alice" / "new").glob("*"))
    if not files:
        return ""
    text = max(files, key=lambda f: f.stat().st_mtime_ns).read_text()
    header = text[text.index("Received: "):text.index("\nSubject:")]
    header = re.sub(r"id [0-9A-F]+", "id QUEUEID", header.replace("(mailgate)", "(Postfix)"))
    return re.sub(r"; .*\(UTC\)", "; DATE", header)


def log_lines(log: Path, skip: int = 0) -> list[str]:
    # OpenSSL's source file and line end Postfix's library-problem line; Python keeps none.
    return [re.sub(r"(TLS library problem: error:[0-9A-F]+:[^:]*::[^:]*:).*", r"\1", line)
            for line in reference.smtpd_lines(log, skip)]


def mail_count(mail: Path) -> int:
    new = mail / "example.test" / "alice" / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def compare(name: str, pairs: tuple[tuple[str, list[str], list[str]], ...]) -> None:
    """Fail with a unified diff at the first (what, Postfix's, ours) pair that differs;
    anvil's `for service 127.0.0.1:PORT` names the listening port, which differs."""
    import pytest

    for what, theirs, ours in pairs:
        theirs, ours = ([re.sub(r"for service 127\.0\.0\.1:\d+", "for service LISTENER", x)
                         for x in lines] for lines in (theirs, ours))
        if theirs != ours:
            diff = "\n".join(difflib.unified_diff(theirs, ours, "postfix", "mailgate",
                                                  lineterm=""))
            pytest.fail(f"{name}: {what} differ\n{diff}")
