"""Logging to the system logger (maillog_file empty): datagrams on a /dev/log-style socket the
test listens on, in syslog(3)'s format; written out as rsyslog does, fail2ban's stock postfix
filter matches them."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from conftest import Client, require, wait_until


def test_lines_reach_the_system_logger(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "log.sock"
    logger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    logger.bind(str(path))
    logger.settimeout(0.2)
    server = server_factory(maillog_file="", syslog_socket=str(path), syslog_name="postfix",
                            mynetworks="192.0.2.0/24").start()
    client = Client(server.port)
    client.reply()
    for line in ("HELO client.example", "MAIL FROM:<a@client.example>",
                 "RCPT TO:<someone@elsewhere.example>", "QUIT"):
        client.send(line)
        client.reply()
    client.close()
    received: list[str] = []

    def disconnected() -> bool:
        try:
            received.append(logger.recv(65536).decode())
        except TimeoutError:
            pass
        return any("disconnect from" in x for x in received)

    wait_until(disconnected)
    logger.close()
    shape = re.compile(r"^<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d postfix/(\w+)\[\d+\]: (.*)$")
    parsed = [shape.match(x) for x in received]
    assert all(parsed), received
    priorities = {m.group(3).split(" ")[0]: int(m.group(1)) for m in parsed if m}
    assert priorities["connect"] == 2 * 8 + 6  # mail.info
    assert any(m.group(3).startswith("NOQUEUE: reject: RCPT") for m in parsed if m)
    # rsyslog writes "TIMESTAMP HOST TAG: text" to /var/log/mail.log: fail2ban reads that
    mail_log = tmp_path / "mail.log"
    mail_log.write_text("".join(re.sub(r"^<\d+>(.{15}) ", r"\1 mx ", x) + "\n"
                                for x in received))
    done = subprocess.run([require("fail2ban-regex"), str(mail_log), "postfix[mode=normal]"],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r"^Lines: \d+ lines, \d+ ignored, 1 matched", done, re.M), done
