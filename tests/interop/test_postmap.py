"""Differential: `mailgate postmap -q -` and Postfix's own `postmap -q -` on the same generated
tables and thousands of generated keys must print the same lines and exit with the same code."""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

N_KEYS = 3000


def _cidr_table(rng: random.Random) -> str:
    lines = []
    for i in range(300):
        if rng.random() < 0.8:
            length = rng.choice([8, 12, 16, 20, 24, 28, 30, 32])
            net = ipaddress.ip_network(f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                                       f"{rng.randrange(256)}.{rng.randrange(256)}/{length}",
                                       strict=False)
        else:
            length = rng.choice([16, 32, 48, 64, 128])
            net = ipaddress.ip_network(f"2001:db8:{rng.randrange(65536):x}::"
                                       f"{rng.randrange(65536):x}/{length}", strict=False)
        neg = "!" if rng.random() < 0.05 else ""
        if rng.random() < 0.05:
            lines.append(f"if {net}")
            lines.append(f"{net.network_address} inside {i}")
            lines.append("endif")
        else:
            lines.append(f"{neg}{net} result {i} {net}")
    return "\n".join(lines) + "\n"


def _cidr_keys(rng: random.Random, table: str) -> list[str]:
    keys = []
    nets = [line.split()[0].lstrip("!") for line in table.splitlines()
            if line[0].isdigit() or line[0] == "!"]
    for _ in range(N_KEYS):
        if rng.random() < 0.6:
            net = ipaddress.ip_network(rng.choice(nets))
            offset = rng.randrange(min(net.num_addresses, 2**20))
            keys.append(str(net.network_address + offset))
        else:
            keys.append(f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}."
                        f"{rng.randrange(256)}")
    return keys


def _regexp_table(rng: random.Random) -> str:
    lines = []
    for i in range(200):
        kind = rng.randrange(5)
        d = rng.randrange(50)
        if kind == 0:
            lines.append(f"/^user{i}@dom{d}\\.example$/ REJECT user {i}")
        elif kind == 1:
            lines.append(f"/^([a-z]+){i}@(sub{d})\\.example$/ OK $1 at $2")
        elif kind == 2:
            lines.append(f"/\\.tld{d}$/ DUNNO tld {d}")
        elif kind == 3:
            lines.append(f"if /dom{d}/")
            lines.append(f"/^spam/ REJECT spam in dom{d}")
            lines.append("endif")
        else:
            lines.append(f"!/^[a-z]+[0-9]*@/ REJECT odd {i}")
    return "\n".join(lines) + "\n"


def _address_keys(rng: random.Random) -> list[str]:
    keys = []
    for _ in range(N_KEYS):
        local = rng.choice(["user", "spam", "Alice", "bob", "x"]) + str(rng.randrange(220))
        domain = rng.choice([f"dom{rng.randrange(60)}.example", f"sub{rng.randrange(60)}.example",
                             f"host.tld{rng.randrange(60)}", "Example.COM"])
        keys.append(f"{local}@{domain}" if rng.random() < 0.95 else domain)
    return keys


def _hash_table(rng: random.Random) -> str:
    lines = []
    for i in range(500):
        key = rng.choice(["user", "Host", "DOMAIN", "x"]) + f"{rng.randrange(300)}.example"
        lines.append(f"{key}\tvalue {i}")
    return "\n".join(lines) + "\n"


def _hash_keys(rng: random.Random) -> list[str]:
    return [rng.choice(["user", "host", "Domain", "x", "y"]) + f"{rng.randrange(320)}.example"
            for _ in range(N_KEYS)]


CASES = {
    "cidr": (_cidr_table, _cidr_keys),
    "regexp": (_regexp_table, lambda rng, table: _address_keys(rng)),
    "pcre": (_regexp_table, lambda rng, table: _address_keys(rng)),
    "texthash": (_hash_table, lambda rng, table: _hash_keys(rng)),
}


@pytest.mark.interop
@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_postmap_query_matches_postfix(tmp_path: Path, kind: str, seed: int) -> None:
    postmap = require("postmap")
    rng = random.Random(f"{kind}-{seed}")
    make_table, make_keys = CASES[kind]
    table = make_table(rng)
    path = tmp_path / f"table.{kind}"
    path.write_text(table)
    keys = "\n".join(make_keys(rng, table)) + "\n"
    spec = f"{kind}:{path}"
    ours = subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", "-q", "-", spec],
                          input=keys, capture_output=True, text=True, timeout=120)
    (tmp_path / "main.cf").write_text("")  # postmap reads a main.cf; -c points at an empty one
    theirs = subprocess.run([postmap, "-c", str(tmp_path), "-q", "-", spec], input=keys,
                            capture_output=True, text=True, timeout=120)
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)
    assert ours.stdout.splitlines() == theirs.stdout.splitlines()
    assert len(ours.stdout.splitlines()) > 10  # the generated keys do hit the table


@pytest.mark.interop
@pytest.mark.parametrize("key", ["10.1.2.3", "1.2.3.4", "172.16.8.1", "::f5", "nonsense"])
def test_single_query_exit_codes(tmp_path: Path, key: str) -> None:
    postmap = require("postmap")
    shared = Path(__file__).resolve().parents[3] / "shared" / "postfix" / "tests" / "util"
    if not shared.exists():
        pytest.skip("shared/ not present")
    spec = f"cidr:{shared / 'dict_cidr.map'}"
    ours = subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", "-q", key, spec],
                          capture_output=True, text=True, timeout=60)
    (tmp_path / "main.cf").write_text("")
    theirs = subprocess.run([postmap, "-c", str(tmp_path), "-q", key, spec],
                            capture_output=True, text=True, timeout=60)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["hash", "btree", "lmdb"])
def test_compiled_tables_answer_as_postfix(tmp_path: Path, kind: str) -> None:
    """Both build the same source with their own postmap, then answer the same keys."""
    postmap = require("postmap")
    rng = random.Random(f"compiled-{kind}")
    source = _hash_table(rng)
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    for d in (ours_dir, theirs_dir):
        d.mkdir()
        (d / "access").write_text(source)
    (theirs_dir / "main.cf").write_text("")
    built = subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap",
                            f"{kind}:{ours_dir / 'access'}"], capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    subprocess.run([postmap, "-c", str(theirs_dir), f"{kind}:{theirs_dir / 'access'}"],
                   check=True, capture_output=True, timeout=120)
    keys = "\n".join(_hash_keys(rng)) + "\n"
    ours = subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", "-q", "-",
                           f"{kind}:{ours_dir / 'access'}"], input=keys, capture_output=True,
                          text=True, timeout=120)
    theirs = subprocess.run([postmap, "-c", str(theirs_dir), "-q", "-",
                             f"{kind}:{theirs_dir / 'access'}"], input=keys,
                            capture_output=True, text=True, timeout=120)
    assert (ours.returncode, ours.stdout.splitlines()) == \
        (theirs.returncode, theirs.stdout.splitlines())
    assert len(ours.stdout.splitlines()) > 100
    warnings = sorted(line.replace("mailgate/postmap:", "postmap:")
                      .replace(str(ours_dir), "DIR") for line in built.stderr.splitlines())
    assert warnings  # the generated source has duplicate keys
