"""PROXY protocol end to end: a real HAProxy (send-proxy, send-proxy-v2) in front of mailgate;
the log and check_client_access see the client HAProxy saw, not HAProxy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Client, free_port, port_accepts, require, wait_until

RULE = "check_client_access inline:{ {127.0.0.9=REJECT proxied client} }"


class HaProxy:
    """HAProxy in TCP mode on a loopback port, forwarding to `backend` with `option`
    (send-proxy or send-proxy-v2); stopped by its PID."""

    def __init__(self, root: Path, backend: int, option: str) -> None:
        self.port = free_port()
        self.config = root / "haproxy.cfg"
        self.config.write_text(f"""\
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend smtp
  bind 127.0.0.1:{self.port}
  default_backend mailgate
backend mailgate
  server mailgate 127.0.0.1:{backend} {option}
""")
        self.proc = subprocess.Popen([require("haproxy"), "-db", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_accepts(self.port) or self.proc.poll() is not None)
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with status {self.proc.returncode}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(params=["send-proxy", "send-proxy-v2"])
def proxied(request: pytest.FixtureRequest, server_factory,  # type: ignore[no-untyped-def]
            tmp_path: Path) -> Iterator[tuple[object, HaProxy]]:
    server = server_factory(smtpd_upstream_proxy_protocol="haproxy",
                            smtpd_client_restrictions=RULE, mynetworks="192.0.2.0/24").start()
    haproxy = HaProxy(tmp_path, server.port, request.param)
    yield server, haproxy
    haproxy.stop()


def rcpt_reply(port: int, source: str) -> str:
    client = Client(port, source=source)
    assert client.reply().startswith("220 ")
    for line in ("EHLO client.example", "MAIL FROM:<a@client.example>"):
        client.send(line)
        client.reply()
    client.send("RCPT TO:<alice@example.test>")
    reply = client.reply()
    client.send("QUIT")
    client.reply()
    client.close()
    return reply


def test_the_client_haproxy_saw_is_the_client(proxied) -> None:  # type: ignore[no-untyped-def]
    server, haproxy = proxied
    assert rcpt_reply(haproxy.port, "127.0.0.9") == \
        "554 5.7.1 <unknown[127.0.0.9]>: Client host rejected: proxied client"
    assert rcpt_reply(haproxy.port, "127.0.0.1").startswith("250 ")
    # (HAProxy's readiness probe shows as a session of its own from 127.0.0.1)
    wait_until(lambda: any("disconnect from unknown[127.0.0.9]" in x for x in server.log()))
    lines = server.log()
    assert any(x.startswith("smtpd: connect from unknown[127.0.0.9]") for x in lines), lines
    assert any("NOQUEUE: reject: RCPT from unknown[127.0.0.9]" in x for x in lines), lines
