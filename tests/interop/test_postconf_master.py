"""Differential: `mailgate postconf -M/-P` against the real Postfix 3.7 postconf, byte for byte."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from conftest import require
from mailgate.cli import main

STOCK = Path("/usr/share/postfix/master.cf.dist")

SUBMISSION = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  -o smtpd_recipient_restrictions=$mua_recipient_restrictions
127.0.0.1:submissions inet n  -       y       -       -       smtpd -o syslog_name=postfix/$service_name
  -osmtpd_tls_wrappermode=yes -vo{ smtpd_banner = $myhostname  ESMTP  ready }
smtps     inet  n       -       y       -       -       smtpd -D
[::1]:2525 inet n - n - 5 smtpd -o smtpd_sasl_auth_enable=yes
"""

ODD = """\
# odd spacing, tabs, comments between continuation lines, long lines
smtp\tinet\tn\t-\ty\t-\t-\tsmtpd\t-o\tsmtpd_helo_required=yes
# a comment inside the entry
\t-o smtpd_data_restrictions=reject_unauth_pipelining,reject_multi_recipient_bounce,permit
a-very-long-service-name-indeed unix - - n 1000? 0 pipe flags=DRhu user=nobody \
argv=/usr/local/bin/some-very-long-program-name --with-a-long-option=${recipient} {two words} -o x
relay unix - - n - - smtp -o { smtp_helo_timeout = 5 } -o smtp_connect_timeout=5 -- {a b} c
postlog   unix-dgram n  -       n       -       1       postlogd
x inet n - n ? 007 smtpd {first arg} -o a=b
"""

COMMANDS = ("smtpd", "pipe", "smtp", "cleanup", "local", "qmgr", "spawn", "postlogd")
NAMES = ("smtp", "submission", "relay", "127.0.0.1:2525", "x", "a_long_service_name_here")
PARAMS = ("syslog_name", "smtpd_banner", "smtpd_tls_security_level", "milter_macro_daemon_name",
          "smtpd_client_restrictions", "a", "b")
VALUES = ("yes", "no", "postfix/$service_name", "$mua_client_restrictions", "permit_mynetworks,"
          "reject", "x" * 70, "", "two  words", "{y}")


def _arg(rng: random.Random) -> str:
    name, value = rng.choice(PARAMS), rng.choice(VALUES)
    return rng.choice((
        f"-o {name}={value}" if " " not in value else f"-o {{ {name} = {value} }}",
        f"-o{name}={value.replace(' ', '')}",
        f"-o {{{name}={value}}}", "-v", "-D", "-vo a=b",
    ))


def _entry(rng: random.Random) -> str:
    fields = [rng.choice(NAMES), rng.choice(("inet", "unix", "pass", "fifo", "unix-dgram")),
              rng.choice("yn-"), rng.choice("yn-"), rng.choice("yn-"),
              rng.choice(("-", "60", "1000?", "0")), rng.choice(("-", "0", "1", "100")),
              rng.choice(COMMANDS)]
    parts = [rng.choice(("\t", " ", "   ")).join(fields)]
    for _ in range(rng.randrange(6)):
        parts.append(_arg(rng))
    if rng.random() < 0.3:
        parts.append(rng.choice(("--", "flags=R")) + " argv=/bin/x {a b} ${recipient}")
    sep = rng.choice((" ", "\n  ", "\n\t"))
    return sep.join(parts) + "\n"


def _random_master(seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randrange(1, 12)):
        if rng.random() < 0.2:
            out.append("# " + _entry(rng))
        out.append(_entry(rng))
    return "".join(out)


CASES = {"stock": STOCK.read_text() if STOCK.exists() else None, "submission": SUBMISSION,
         "odd": ODD, **{f"random{seed}": _random_master(seed) for seed in range(8)}}
REQUESTS = (["-M"], ["-Mf"], ["-P"], ["-Pf"], ["-M", "smtp/inet"], ["-M", "smtp", "relay"],
            ["-P", "submission/inet/syslog_name"], ["-P", "*/inet"], ["-M", "*/unix"])


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=60, check=False)


def _ours(capsys: pytest.CaptureFixture[str], argv: list[str]
          ) -> subprocess.CompletedProcess[bytes]:
    """`mailgate postconf ARGV` in this process (main() as the command runs it)."""
    capsys.readouterr()
    code = main(["postconf", *argv])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.encode(), err.encode())


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_output_as_postconf(case: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    postconf = require("postconf")
    text = CASES[case]
    if text is None:
        pytest.skip(f"{STOCK} is not installed")
    (tmp_path / "main.cf").write_text("compatibility_level = 3.7\n")
    (tmp_path / "master.cf").write_text(text)
    for request in REQUESTS:
        theirs = _run([postconf, "-c", str(tmp_path), *request])
        ours = _ours(capsys, ["-c", str(tmp_path), *request])
        assert ours.returncode == theirs.returncode, (request, theirs.stderr, ours.stderr)
        assert ours.stdout == theirs.stdout, (request, theirs.stderr)


@pytest.mark.parametrize("text", [
    "smtp inet n - y - -\n", "smtp bogus n - y - - smtpd\n", "smtp inet x - y - - smtpd\n",
    "smtp inet n - yes - - smtpd\n", "smtp inet n - y 1x - smtpd\n",
    "smtp inet n - y 12?? - smtpd\n", "smtp inet n - y - a smtpd\n",
])
def test_bad_lines_fail_as_postconf_fails(text: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    postconf = require("postconf")
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("# first\n" + text)
    theirs = _run([postconf, "-c", str(tmp_path), "-M"])
    ours = _ours(capsys, ["-c", str(tmp_path), "-M"])
    assert theirs.returncode == ours.returncode == 1
    # postconf names the field; we add FILE:LINE in front of the same words
    their_words = theirs.stderr.decode().split("fatal: ", 1)[1].strip()
    their_words = their_words.split(": line 2: ", 1)[-1]
    assert ours.stderr.decode().strip().endswith(their_words)
    assert b"master.cf:2: " in ours.stderr
