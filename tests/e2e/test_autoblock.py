"""Automatic blocks end to end: a dictionary attack moving across one /24 (XCLIENT names each
new address, as a proxy would) is refused network-wide after the threshold while clients from
another network and from mynetworks deliver; `mailgate block` lists, lifts and adds blocks in
the running server's state; with real client addresses the refusal follows the early
greeting, the block expires, a repeat offence doubles it, and fail2ban's filter matches."""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Client, Server, require, wait_until
from support import xclient

ROOT = Path(__file__).resolve().parents[2]
ATTACKED = "198.51.100"  # the moving spammer's /24
INSIDER = f"{ATTACKED}.99"  # in mynetworks, inside the attacked network
REFUSED = "421 4.3.2 Service currently unavailable; client [{}] blocked automatically"


def session(server: Server, addr: str, recipients: list[str], deliver: bool = False
            ) -> list[int] | str:
    return xclient.session(server.port, addr, recipients, deliver)


def mailgate(server: Server, action: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`mailgate block ACTION -c DIR ARGS` (as root it becomes mail_owner, as the workers)."""
    return subprocess.run([sys.executable, "-m", "mailgate.cli", "block", action, "-c",
                           str(server.root / "etc"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def attacked(server_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    yield server_factory(smtpd_authorized_xclient_hosts="127.0.0.0/8",
                         mynetworks=f"127.0.0.0/8, {INSIDER}/32",
                         auto_block_threshold="5").start()


def test_a_moving_dictionary_attack_is_blocked_network_wide(attacked: Server) -> None:
    server = attacked
    addresses = iter(range(10, 99))
    for _ in range(3):  # two guesses from each address: 2, 4, then the fifth blocks
        addr = f"{ATTACKED}.{next(addresses)}"
        assert session(server, addr, ["nobody1", "nobody2"]) == [550, 550]
    server.wait_log(rf"smtpd: warning: auto-block: blocked {ATTACKED}\.0/24 for 600s "
                    r"\(offence 1\): 5 bad events from the network, last unknown_recipient")

    def refused() -> bool:  # the spammer moves on; every worker knows within seconds
        addr = f"{ATTACKED}.{next(addresses)}"
        return session(server, addr, ["nobody3", "nobody4"]) == REFUSED.format(addr)

    wait_until(refused)
    # never delayed: a client of another network, and one of mynetworks inside the /24
    assert session(server, "203.0.113.7", ["alice"], deliver=True) == [250]
    assert session(server, INSIDER, ["bob"], deliver=True) == [250]
    wait_until(lambda: len(server.maildir_files("alice")) == 1 == len(
        server.maildir_files("bob")))
    log = server.smtpd_log()
    assert any(line.startswith(f"NOQUEUE: reject: CONNECT from unknown[{ATTACKED}.") and
               line.endswith("blocked automatically; proto=SMTP") for line in log), log

    listed = mailgate(server, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{ATTACKED}.0/24 blocked until "), listed.stdout
    assert "offence 1, auto: 5 bad events from the network" in listed.stdout
    (entry,) = [json.loads(x) for x in mailgate(server, "list", "--json").stdout.splitlines()]
    assert (entry["target"], entry["offence"], entry["source"]) == \
        (f"{ATTACKED}.0/24", 1, "auto")
    refusals = sum(1 for line in log if "blocked automatically" in line)
    report = subprocess.run([sys.executable, "-m", "mailgate.cli", "report",
                             str(server.log_path)], capture_output=True, text=True, timeout=60,
                            check=True).stdout
    assert f"  1 blocks placed (0 addresses, 1 networks), {refusals} connections refused" \
        in report, report
    assert f"         1  {ATTACKED}.0/24 (longest 600s)" in report, report


def test_the_block_command_lifts_and_adds_blocks(attacked: Server) -> None:
    server = attacked
    for n in range(10, 13):
        session(server, f"{ATTACKED}.{n}", ["nobody1", "nobody2"])
    server.wait_log(r"auto-block: blocked 198\.51\.100\.0/24")
    deleted = mailgate(server, "delete", f"{ATTACKED}.7/24")
    assert (deleted.returncode, deleted.stdout) == \
        (0, f"mailgate block: {ATTACKED}.0/24 unblocked\n"), deleted.stderr
    wait_until(lambda: session(server, f"{ATTACKED}.50", []) == [])  # lifted everywhere
    assert mailgate(server, "delete", f"{ATTACKED}.0/24").returncode == 1
    added = mailgate(server, "add", "-t", "1h", "192.0.2.77")
    assert added.returncode == 0 and "192.0.2.77 blocked until" in added.stdout, added.stderr
    wait_until(lambda: session(server, "192.0.2.77", []) == REFUSED.format("192.0.2.77"))
    assert session(server, "192.0.2.78", []) == []
    assert "192.0.2.77 blocked until" in mailgate(server, "list").stdout
    bad = mailgate(server, "add", "10.0.0.0/16")
    assert bad.returncode == 2 and "auto_block_ipv4_prefix_length" in bad.stderr


def refusal(server: Server, source: str) -> str:
    """The refusal a client at `source` gets after the greeting (the server sends it without
    waiting for a command, then closes), or "" when its EHLO is answered."""
    client = Client(server.port, source=source)
    try:
        assert client.reply().startswith("220 ")  # the accept process greets at once
        client.send("EHLO probe.example")
        reply = client.reply()
        if reply.startswith("421 "):
            assert client.closed()
            return reply
        assert reply.startswith("250"), reply
        return ""
    finally:
        client.close()


def test_a_real_client_is_refused_after_the_greeting_until_its_block_ends(
        server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_processes="1", mynetworks="127.0.0.1/32",
                            auto_block_threshold="2", auto_block_time="2s").start()

    def guess(users: list[str]) -> list[int]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10,
                          source_address=("127.0.0.30", 0)) as smtp:
            smtp.ehlo("guess.example")
            smtp.mail("x@guess.example")
            return [smtp.rcpt(f"{user}@example.test")[0] for user in users]

    assert guess(["nobody1", "nobody2"]) == [550, 550]
    server.wait_log(r"auto-block: blocked 127\.0\.0\.30 for 2s \(offence 1\): 2 bad events "
                    r"from the address, last unknown_recipient from unknown\[127\.0\.0\.30\]")
    assert refusal(server, "127.0.0.30") == REFUSED.format("127.0.0.30")
    assert refusal(server, "127.0.0.31") == ""  # its neighbour is not blocked
    wait_until(lambda: refusal(server, "127.0.0.30") == "")  # the block ends
    assert guess(["nobody3", "nobody4"]) == [550, 550]
    server.wait_log(r"auto-block: blocked 127\.0\.0\.30 for 4s \(offence 2\)")

    require("fail2ban-regex")
    if not Path("/etc/fail2ban/filter.d/common.conf").exists():
        pytest.skip("fail2ban's common.conf is not installed")
    config = tmp_path / "fail2ban"  # the system's fail2ban configuration + our filter
    shutil.copytree("/etc/fail2ban", config)
    shutil.copy(ROOT / "contrib" / "fail2ban" / "filter.d" / "mailgate-autoblock.conf",
                config / "filter.d")
    out = subprocess.run(["fail2ban-regex", "--config", str(config), str(server.log_path),
                          "mailgate-autoblock"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    refusals = [x for x in server.smtpd_log() if x.startswith(
        "NOQUEUE: reject: CONNECT from unknown[127.0.0.30]: " + REFUSED.format("127.0.0.30"))]
    assert refusals and f" 0 ignored, {len(refusals)} matched" in out, out
