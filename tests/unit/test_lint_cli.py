"""The real commands: `mailgate lint` (exit status, both output formats), `mailgate postmap`'s
new warnings, and the configurations docs/ shows, which must lint clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailgate.maps.compiled import compile_source
from support.lintcase import lint, write_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>[0-9]+): (?P<severity>error|warning): "
                  r"(?P<code>[a-z-]+): (?P<text>.+)$")
KEYS = {"file", "line", "severity", "code", "message", "suggestion"}


def mailgate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgate.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_lint_command_line_exit_status_and_formats(tmp_path: Path) -> None:
    clean = write_config(tmp_path / "clean", "mynetworks = 127.0.0.0/8\n")
    done = mailgate("lint", "-c", str(clean))
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"mailgate lint: {clean}: no findings\n", "")

    warned = write_config(tmp_path / "warned", "smtpd_hard_error_limit = 10\n")
    done = mailgate("lint", "-c", str(warned))
    assert done.returncode == 0  # warnings only
    assert done.stdout.splitlines()[-1] == f"mailgate lint: {warned}: 0 errors, 1 warning"

    bad = write_config(tmp_path / "bad", """\
        mynetworks = 0.0.0.0/0
        smtpd_client_restrictions = check_client_access hash:DIR/access, reject_unknown_client
        """, tables={"access": "200.123.*.* REJECT\n"}, postmap=("access",))
    done = mailgate("lint", "-c", str(bad))
    assert done.returncode == 1 and done.stderr == ""
    *lines, summary = done.stdout.splitlines()
    assert summary == f"mailgate lint: {bad}: 2 errors, 1 warning"
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["file"], int(m["line"]), m["severity"], m["code"]) for m in parsed if m] == [
        (str(bad / "access"), 1, "error", "wildcard-key"),
        (str(bad / "main.cf"), 1, "error", "open-relay"),
        (str(bad / "main.cf"), 2, "warning", "risky-restriction")]

    done = mailgate("lint", "-c", str(bad), "--json")
    assert done.returncode == 1
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(set(o) == KEYS for o in objects)
    assert [(o["line"], o["code"]) for o in objects] == [(1, "wildcard-key"), (1, "open-relay"),
                                                         (2, "risky-restriction")]
    assert objects[0]["suggestion"].startswith('use the octet prefix "200.123"')


def test_lint_command_line_with_a_main_cf_that_does_not_load(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "# ok\nsmtpd_soft_error_limit = ten\n")
    done = mailgate("lint", "-c", str(d))
    assert done.returncode == 1
    assert done.stdout.startswith(f"{d}/main.cf:2: error: config-error: ")
    done = mailgate("lint", "-c", str(tmp_path / "nowhere"), "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == "config-error"


def test_postmap_prints_the_key_warnings_when_it_builds(tmp_path: Path) -> None:
    source = tmp_path / "access"
    source.write_text("# blocks\n200.123.*.* REJECT\n192.0.2.0/24 REJECT\nok.example OK\n"
                      "*@spam.example REJECT\n")
    done = mailgate("postmap", f"hash:{source}")
    assert done.returncode == 0 and (tmp_path / "access.db").exists()
    assert done.stderr.splitlines() == [
        f'mailgate/postmap: warning: {source}, line 2: key "200.123.*.*" contains "*", which '
        'is no wildcard in a hash: table: the key never matches; use the octet prefix '
        '"200.123" (it matches 200.123.0.0/16) or the cidr: line "200.123.0.0/16 REJECT"',
        f'mailgate/postmap: warning: {source}, line 3: key "192.0.2.0/24" is a network, but a '
        'hash: table matches keys as text: the key never matches; use the octet prefix '
        '"192.0.2" or the cidr: line "192.0.2.0/24 REJECT"',
        f'mailgate/postmap: warning: {source}, line 5: key "*@spam.example" contains "*", '
        'which is no wildcard in a hash: table: the key never matches; use "spam.example" (an '
        'access table matches every address in the domain) or "@spam.example" (a virtual or '
        'canonical table)']
    done = mailgate("postmap", "-i", f"lmdb:{source}", stdin="10.0.0.0/8 REJECT\n")
    assert done.returncode == 0
    assert done.stderr.startswith('mailgate/postmap: warning: stdin, line 1: key "10.0.0.0/8" '
                                  'is a network, but a lmdb: table')
    assert mailgate("postmap", f"hash:{tmp_path / 'access'}", "-q", "ok.example").stdout == \
        "OK\n"


# --- the configurations docs/ shows ----------------------------------------------------------

def blocks(name: str) -> list[str]:
    """The code blocks of a docs file: fenced (```), or indented by four spaces."""
    text = (DOCS / name).read_text()
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    indented = re.findall(r"(?:^\n)((?:^    .*\n|^\n)+)", text, re.M)
    return [*fenced, *(textwrap.dedent(b) for b in indented)]


def block(name: str, marker: str) -> str:
    found = [b for b in blocks(name) if marker in b]
    assert len(found) == 1, (name, marker, found)
    return found[0]


def _docs_tables(d: Path, text: str) -> str:
    """Tables a docs configuration names under /etc/mailgate/ are made in `d` (empty ones,
    compiled where the type needs it), so that the configuration can be read here."""
    for kind, path in re.findall(r"(hash|cidr):(/etc/mailgate/[\w./-]+)", text):
        local = d / Path(path).name
        local.write_text("# made by the test\n")
        if kind == "hash":
            compile_source(kind, str(local), fold_case=True)
    return text.replace("/etc/mailgate/", f"{d}/")


DOCS_CONFIGS = {
    "running-demo": (("running.md", "mydestination = localhost"),),
    "deployment": (("deployment.md", "smtpd_tls_chain_files"),
                   ("deployment.md", "smtpd_sasl_type = dovecot"),
                   ("deployment.md", "submission  inet")),
    "tls": (("tls.md", "smtpd_tls_security_level = may"),),
    "sasl": (("sasl.md", "smtpd_sasl_auth_enable = yes"),),
    "policyd": (("policy.md", "policyd_listen ="),),
    "postfix-with-policyd": (("policy.md", "reject_unauth_pipelining,"),),
    "policy-services": (("policy.md", "check_policy_service inet:127.0.0.1:10023"),),
    "master-cf": (("deployment.md", "smtpd_sasl_type = dovecot"),
                  ("master-cf.md", "submissions inet n")),
    "proxy": (("proxy.md", "10.0.0.5:25 inet"),),
}


@pytest.mark.parametrize("case", sorted(DOCS_CONFIGS))
def test_docs_configurations_are_clean(tmp_path: Path, case: str) -> None:
    d = tmp_path / "c"
    d.mkdir()
    main_cf, master_cf = "", ""
    for name, marker in DOCS_CONFIGS[case]:
        text = block(name, marker)
        if re.search(r"^\S+\s+inet\s", text, re.M):
            master_cf += text
        else:
            main_cf += text
    main_cf = _docs_tables(d, main_cf)
    (d / "main.cf").write_text(main_cf)
    if master_cf:
        (d / "master.cf").write_text(master_cf)
    result = lint(d, resolvers="127.0.0.1")
    assert result.findings == [], (main_cf, master_cf)
    assert result.status == 0
