"""`mailgate check --script` against Postfix's own smtpd_check vectors (shared/postfix/tests).

The DNS-free files must reproduce byte for byte. For the DNS-using files every probe that runs
no DNS-based restriction must match the output regenerated from Postfix 3.7.11 with a resolver
that finds nothing (`regenerated-3.7.11-nxdomain/`).
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
from pathlib import Path

import pytest

from conftest import SHARED
from mailgate.check.driver import run_script, run_tokens
from mailgate.postmap import run as postmap

VECTORS = SHARED / "postfix" / "tests" / "smtpd"
REGEN = SHARED / "postfix" / "tests" / "regenerated-3.7.11-nxdomain"
pytestmark = pytest.mark.skipif(not VECTORS.exists(), reason="shared/ not present")

DNS_FREE = [("smtpd_acl.in", "smtpd_acl.ref"), ("smtpd_check_dsn.in", "smtpd_check_dsn.ref"),
            ("smtpd_check.in4", "smtpd_check.ref4"), ("smtpd_addr_valid.in", "smtpd_addr_valid.ref"),
            ("smtpd_error.in", "smtpd_error.ref")]
DNS_USING = [("smtpd_check.in", "smtpd_check.ref"), ("smtpd_check.in2", "smtpd_check.ref2"),
             ("smtpd_dnswl.in", "smtpd_dnswl.ref"), ("smtpd_exp.in", "smtpd_exp.ref"),
             ("smtpd_nullmx.in", "smtpd_nullmx.ref"), ("smtpd_server.in", "smtpd_server.ref"),
             ("smtpd_check_backup.in", "smtpd_check_backup.ref"),
             ("smtpd_dns_filter.in", "smtpd_dns_filter.ref")]
# Restrictions that consult the DNS (issue 5); probes running them are left out here.
_DNS = re.compile(r"reject_unknown_(?!client\b|client_hostname|reverse)|reject_rbl|reject_rhsbl|"
                  r"reject_maps_rbl|permit_dnswl|permit_rhswl|_mx_access|_ns_access|_a_access|"
                  r"permit_mx_backup|reject_unknown_client\b|reject_unverified|"
                  r"permit_naked_ip_address|check_relay_domains", re.I)


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> str:
    for item in VECTORS.iterdir():
        shutil.copy(item, tmp_path / item.name)
    monkeypatch.chdir(tmp_path)
    assert postmap(["hash:smtpd_check_access"], None, False, True) == 0
    out = io.StringIO()
    asyncio.run(run_script((tmp_path / script).read_text().splitlines(), out))
    return out.getvalue()


@pytest.mark.parametrize(("script", "ref"), DNS_FREE, ids=[s for s, _ in DNS_FREE])
def test_dns_free_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str,
                          ref: str) -> None:
    assert _run(tmp_path, monkeypatch, script) == (VECTORS / ref).read_text()


def test_token_vectors() -> None:
    out = io.StringIO()
    run_tokens((VECTORS / "smtpd_token.in").read_text().splitlines(), out)
    assert out.getvalue() == (VECTORS / "smtpd_token.ref").read_text()


def _probes(text: str) -> list[tuple[str, str]]:
    """(command line, everything printed for it)."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith(">>> "):
            out.append((line[4:], ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


def _dns_free(probes: list[tuple[str, str]]) -> list[bool]:
    """For each probe: do the lists it runs (and classes they may reach) avoid the DNS?"""
    lists: dict[str, str] = {}
    classes: dict[str, str] = {}
    delay = True
    keep = []
    for command, _ in probes:
        words = command.split()
        if len(words) == 2 and words[0].endswith("_restrictions"):
            lists[words[0].removesuffix("_restrictions")] = words[1]
        elif len(words) == 2 and words[0] == "restriction_class":
            name, _, members = words[1].partition(",")
            classes[name] = members
        elif len(words) == 2 and words[0] == "smtpd_delay_reject":
            delay = words[1] != "0"
        stages = {"client": ["client"], "helo": ["helo"], "mail": ["sender"],
                  "rcpt": ["relay", "recipient"] + (["client", "helo", "sender"] if delay
                                                    else [])}.get(words[0] if words else "")
        if not stages:
            keep.append(False)
            continue
        text = " ".join(lists.get(stage, "") for stage in stages)
        if "smtpd_check_access" in text:  # its values name classes
            text += " " + " ".join(classes.values())
        text += " " + " ".join(v for k, v in classes.items() if k in text)
        keep.append(not _DNS.search(text))
    return keep


@pytest.mark.parametrize(("script", "ref"), DNS_USING, ids=[s for s, _ in DNS_USING])
def test_dns_free_probes_of_dns_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      script: str, ref: str) -> None:
    ours = _probes(_run(tmp_path, monkeypatch, script))
    expected = _probes((REGEN / ref).read_text())
    mismatches = []
    compared = 0
    for (command, output), (_, got), dns_free in zip(expected, ours, _dns_free(expected), strict=False):
        if dns_free:
            compared += 1
            if got != output:
                mismatches.append(f">>> {command}\n--- postfix\n{output}--- mailgate\n{got}")
    assert not mismatches, f"{len(mismatches)} of {compared} probes differ:\n" + \
        "\n".join(mismatches)
