"""postscreen on both sides: a reference Postfix whose master.cf runs postscreen in front of
smtpd, mailgate's master.cf for the same, scripted clients from 127.0.0.x addresses, and
the postscreen, dnsblog and smtpd log lines both servers write, normalized."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from support.dialogue import _Reader
from support.reference import Instance

Step = tuple[str, bytes]  # ("C", line) send+CRLF, read a reply | ("S", raw) send | ("R", b"") read


def enable_reference_postscreen(instance: Instance) -> None:
    """The reference's master.cf: postscreen on its port, smtpd behind it (pass), dnsblog
    and tlsproxy; the next configure() reloads it."""
    etc = str(instance.etc)
    port = instance.port
    for entry in (f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - 1 postscreen",
                  "smtpd/pass=smtpd pass - - n - - smtpd",
                  "dnsblog/unix=dnsblog unix - - n - 0 dnsblog",
                  "tlsproxy/unix=tlsproxy unix - - n - 0 tlsproxy"):
        subprocess.run(["postconf", "-c", etc, "-Me", entry], check=True, timeout=60)


def mailgate_master_cf(port: int) -> str:
    """The same services for mailgate (dnsblog and tlsproxy are accepted and ignored)."""
    return (f"127.0.0.1:{port} inet n - n - 1 postscreen\n"
            "smtpd pass - - n - - smtpd\n"
            "dnsblog unix - - n - 0 dnsblog\n"
            "tlsproxy unix - - n - 0 tlsproxy\n")


def play(port: int, source: str, steps: list[Step], greeting: bool = True,
         timeout: float = 20.0) -> list[str]:
    """One session from `source`: the greeting (unless `greeting` is off: a client that
    talks first or leaves at once), then the steps; `S: ` reply lines, `<CLOSED>` at the end
    of the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))
    reader = _Reader(sock)
    out = ["S: " + x for x in reader.reply()] if greeting else []
    try:
        for kind, data in steps:
            if kind in ("C", "S"):
                out.append("C: " + data.decode("latin-1"))
                try:
                    sock.sendall(data + b"\r\n" if kind == "C" else data)
                except OSError:
                    out.append("S: <CLOSED>")
                    break
                if kind == "S":
                    continue
            reply = reader.reply()
            out += ["S: " + x for x in reply]
            if reply[-1] == "<CLOSED>":
                break
    finally:
        sock.close()
    return out


_LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [^/]+/(postscreen|dnsblog|smtpd)"
                   r"\[\d+\]: (.*)$")
_NOISE = ("full cleanup: retained=", "valid_hostname: empty hostname",
          "malformed domain name in resource name of SOA record")


def _normalized(text: str) -> str:
    text = re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", text)
    text = re.sub(r"(\[[0-9a-f.:]+\]):\d+", r"\1:PORT", text)
    return re.sub(r"\b(PREGREET \d+|HANGUP) after [\d.]+ ", r"\1 after T ", text)


def log_lines(log: Path, skip: int = 0) -> tuple[list[str], list[str]]:
    """(postscreen and smtpd lines in order, dnsblog lines sorted: the lists answer in any
    order) from line `skip` on, as `program: text`; client and server ports, queue ids and
    postscreen's elapsed times normalized; the cache cleanup's statistics and the warnings
    the test DNS server's SOA records cause in Postfix left out."""
    ordered, lists = [], []
    for line in log.read_text(errors="replace").splitlines()[skip:] if log.exists() else []:
        m = _LINE.match(line)
        if not m or any(noise in m.group(2) for noise in _NOISE):
            continue
        entry = f"{m.group(1)}: {_normalized(m.group(2))}"
        (lists if m.group(1) == "dnsblog" else ordered).append(entry)
    return ordered, sorted(lists)


def ended(log: Path, skip: int = 0) -> int:
    """Sessions over: postscreen's DISCONNECT lines and smtpd's disconnect lines."""
    ordered, _ = log_lines(log, skip)
    return sum("DISCONNECT [" in x or "smtpd: disconnect from" in x for x in ordered)
