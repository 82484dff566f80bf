"""`mailgate report` on the log of real sessions: a dictionary attack moving across a /24 and a
single guessing client are found, the access-map lines it prints block them when pasted into
a cidr: table, and the HTML page renders in headless Chromium with the reject counts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Client, Server, require, wait_until
from support.png import count_color

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
MOVING = [f"198.51.100.{n}" for n in range(10, 16)]  # two guesses each: never 5 from one
GUESSER = "203.0.113.7"  # six guesses alone


def guess(server: Server, addr: str, users: list[str], good: bool = False) -> list[str]:
    client = Client(server.port)
    try:
        assert client.reply().startswith("220")
        assert client.cmd(f"XCLIENT ADDR={addr} NAME=unknown").startswith("220")
        client.cmd("EHLO guess.example")
        client.cmd("MAIL FROM:<x@guess.example>")
        replies = [client.cmd(f"RCPT TO:<{u}@example.test>") for u in users]
        if good:
            assert client.cmd("DATA").startswith("354")
            assert client.cmd("Subject: hi\r\n\r\nhello\r\n.").startswith("250")
        client.cmd("QUIT")
        return replies
    finally:
        client.close()


def report(*args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "mailgate.cli", "report", *args],
                         capture_output=True, input=stdin, timeout=120, check=True)
    return out.stdout.decode()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> object:
    server = Server(tmp_path_factory.mktemp("attack"), extra={
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "smtpd_recipient_restrictions": "reject_unauth_destination"}).start()
    try:
        for i, addr in enumerate(MOVING):
            replies = guess(server, addr, [f"user{2 * i}", f"user{2 * i + 1}"])
            assert all(r.startswith("550 5.1.1") for r in replies), replies
        guess(server, GUESSER, [f"admin{n}" for n in range(6)])
        assert guess(server, "198.51.100.99", ["alice"], good=True) == ["250 2.1.5 Ok"]
        server.wait_log(r"status=sent")
        yield server
    finally:
        server.stop()


def test_dictionary_attacks_are_found(attacked: Server) -> None:
    text = report(str(attacked.log_path))
    assert re.search(r"^\s+1\s+received$", text, re.M) and \
        re.search(r"^\s+1\s+delivered$", text, re.M), text
    assert re.search(r"^\s+18\s+rejected", text, re.M), text
    assert re.search(r"^\s+18\s+reject_unlisted_recipient$", text, re.M)
    assert "198.51.100.0/24: 12 unknown-user rejects, 12 distinct recipients, from 6 " \
           "addresses" in text
    assert f"{GUESSER}/32: 6 unknown-user rejects, 6 distinct recipients, from 1 address" in text
    assert re.search(r"^\s+12\s+198\.51\.100\.0/24$", text, re.M)  # top rejected networks


def test_printed_access_lines_block_the_attackers(attacked: Server, server_factory) -> None:  # type: ignore[no-untyped-def]
    """What the report tells an administrator to paste works as a cidr: table."""
    text = report(str(attacked.log_path))
    lines = [x.strip() for x in text.splitlines() if " REJECT dictionary attack" in x]
    assert len(lines) == 2, text
    table = attacked.root / "client_access.cidr"
    table.write_text("\n".join(lines) + "\n")
    guarded = server_factory(smtpd_authorized_xclient_hosts="127.0.0.0/8",
                             smtpd_client_restrictions=f"check_client_access cidr:{table}"
                             ).start()
    assert guess(guarded, "198.51.100.200", ["alice"]) == [
        "554 5.7.1 <unknown[198.51.100.200]>: Client host rejected: dictionary attack from "
        "6 addresses (12 unknown users)"]
    assert guess(guarded, GUESSER, ["alice"])[0].startswith("554 5.7.1")
    assert guess(guarded, "203.0.113.8", ["alice"]) == ["250 2.1.5 Ok"]


def test_inputs_gzip_stdin_several_files_and_period(attacked: Server, tmp_path: Path) -> None:
    import gzip

    log = attacked.log_path.read_bytes()
    half = log.splitlines(keepends=True)
    first, second = b"".join(half[:len(half) // 2]), b"".join(half[len(half) // 2:])
    (tmp_path / "maillog.1.gz").write_bytes(gzip.compress(first))
    (tmp_path / "maillog").write_bytes(second)
    whole = report(str(attacked.log_path)).splitlines()[1:]  # without the line counts
    assert report(str(tmp_path / "maillog.1.gz"), str(tmp_path / "maillog")).splitlines()[1:] \
        == whole
    assert report(stdin=log).splitlines()[1:] == whole
    assert re.search(r"^\s+0\s+rejected", report("--since", "2999-01-01", str(attacked.log_path)),
                     re.M)
    assert re.search(r"^\s+0\s+rejected", report("--until", "2000-01-01",
                                                 str(attacked.log_path)), re.M)


def test_html_page_in_chromium(attacked: Server, tmp_path: Path) -> None:
    chromium = require("chromium")
    page = tmp_path / "report.html"
    report("--html", str(page), str(attacked.log_path))
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,900"]
    subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    wait_until(shot.exists)
    assert count_color(shot, (0xD6, 0x27, 0x28)) > 2000  # the red reject bars were drawn
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    hour = re.search(r'<svg id="rejects-per-hour".*?</svg>', dom, re.S)
    assert hour, dom[:2000]
    totals = re.findall(r'class="bar-total"[^>]*>(\d+)<', hour.group(0))
    assert sum(map(int, totals)) == 18, totals  # one bar, or two if the run crossed an hour
    assert "reject_unlisted_recipient (18)" in hour.group(0)
    nets = re.search(r'<svg id="top-networks".*?</svg>', dom, re.S)
    assert nets and re.findall(r'class="bar-count"[^>]*>(\d+)<', nets.group(0)) == ["12", "6"]
    assert 'id="total-rejected"><b>18</b>' in dom
