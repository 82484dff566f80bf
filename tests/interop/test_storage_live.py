"""Differential: `452 4.3.1 Insufficient system storage` (queue_minfree) as a live Postfix 3.7
answers and logs it, made to fail on any disk with a huge queue_minfree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SHARED, Client, free_port, require, wait_until
from support import reference

REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
SETTINGS = {"queue_minfree": "999999999999999", "smtpd_hard_error_limit": "3"}
DIALOGUE = ("EHLO client.test", "MAIL FROM:<a@b.test>", "MAIL FROM:<a@b.test> SIZE=20000000",
            "RSET", "MAIL FROM:<>", "RCPT TO:<alice@example.test>")


def _play(port: int, log: Path) -> tuple[list[str], list[str]]:
    client = Client(port)
    replies = [client.reply().split("\n")[-1]]
    for command in DIALOGUE:
        replies.append(client.cmd(command).split("\n")[-1])
    client.close()
    wait_until(lambda: any("disconnect from" in x for x in reference.smtpd_lines(log)))
    lines = [re.sub(r"queue: \S+ bytes", "queue: N bytes", x)
             for x in reference.smtpd_lines(log) if "connect from" not in x]
    return replies[1:], lines


@pytest.mark.interop
def test_insufficient_storage_matches_postfix(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    require("postfix")
    if not REFERENCE.exists():
        pytest.skip("shared/postfix/reference-postfix.sh not present")
    ref = tmp_path / "ref"
    port = free_port()
    reference.start(REFERENCE, ref, port, reference.merged_fragment(tmp_path / "f.cf",
                                                                     SETTINGS))
    try:
        postfix = _play(port, ref / "maillog")
    finally:
        reference.stop(REFERENCE, ref)
    server = server_factory(**SETTINGS).start()
    mailgate = _play(server.port, server.log_path)
    assert postfix[0][1] == "452 4.3.1 Insufficient system storage"  # the premise
    assert postfix[0][-1].startswith("421 4.7.0")  # each 452 counts as an error
    assert "warning: not enough free space in mail queue: N bytes < 1.5*message size limit" \
        in postfix[1]
    assert mailgate == postfix
