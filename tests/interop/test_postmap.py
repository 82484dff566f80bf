"""Differential: `mailgate postmap -q -` and Postfix's own `postmap -q -` on the same generated
tables and thousands of generated keys must print the same lines and exit with the same code."""

from __future__ import annotations

import ipaddress
import os
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


def _odd_address(rng: random.Random) -> str:
    """An address in one of the forms cidr tables and keys meet (not all are addresses)."""
    a, b, c, d = (rng.randrange(256) for _ in range(4))
    hexes = [f"{rng.randrange(65536):x}" for _ in range(8)]
    forms = [
        f"{a}.{b}.{c}.{d}", f"[{a}.{b}.{c}.{d}]", f"::ffff:{a}.{b}.{c}.{d}",
        f"::FFFF:{a}.{b}.{c}.{d}", f"::ffff:0:{a}.{b}.{c}.{d}", f"::{a}.{b}.{c}.{d}",
        f"0{a}.{b}.{c}.{d}", f"{a}.{b}.{c}", f"{a}.{b}.{c}.{d}.{a}", f"{a}.{b}.{c}.{d + 256}",
        f"2001:db8:{hexes[0]}::{hexes[1]}", f"2001:DB8:{hexes[0].upper()}::{hexes[1]}",
        f"fe80::{hexes[2]}%eth0", f"[2001:db8::{hexes[3]}]", "::", "::1", "1::", "",
        ":".join(hexes), ":".join(hexes[:7]), ":".join(hexes) + ":1", "2001:db8::1::2",
        "host.example", "garbage", f" {a}.{b}.{c}.{d}", f"{a}.{b}.{c}.{d}/32",
        f"::ffff:{hexes[4]}:{hexes[5]}", f"0:0:0:0:0:ffff:{a}.{b}.{c}.{d}",
    ]
    return rng.choice(forms)


def _odd_cidr_table(rng: random.Random) -> str:
    """cidr rules in every odd form: mapped, bracketed, zones, bad masks, if/endif nests."""
    lines = []
    depth = 0
    for i in range(rng.randrange(20, 80)):
        roll = rng.random()
        neg = rng.choice(["", "", "", "!", "! ", "!!"])
        if roll < 0.1:
            lines.append(f"{rng.choice(['if', 'IF', 'If'])} {neg}{_odd_pattern(rng)}")
            depth += 1
        elif roll < 0.18 and (depth or rng.random() < 0.2):
            lines.append(rng.choice(["endif", "ENDIF", "endif junk"]))
            depth = max(depth - 1, 0)
        else:
            lines.append(f"{neg}{_odd_pattern(rng)} result{i} {rng.choice(['', 'x y', 'é'])}")
    return "\n".join(lines) + "\n"


def _odd_pattern(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return _odd_address(rng)
    addr = rng.choice([f"{rng.randrange(256)}.{rng.randrange(256)}.0.0", "0.0.0.0", "::",
                       "::ffff:0.0.0.0", "::ffff:10.0.0.0", "2001:db8::", "[10.0.0.0]",
                       "[::]", "fe80::%lo", "010.0.0.0", "10.0.0"])
    mask = rng.choice(["0", "8", "16", "24", "32", "33", "64", "96", "104", "128", "129",
                       "", "x", "08", "264", "-1", "4294967304"])
    return f"{addr}/{mask}"


def _odd_cidr_keys(rng: random.Random, table: str) -> list[str]:
    return [_odd_address(rng) for _ in range(N_KEYS // 10)]


_WORDS = ["user", "USER", "dom", "a", "ab", "b", "x", "ñandú", "é", "ÉCOLE", "1", "42"]
_ATOMS = ["user", "dom", "a", "ab", "b", "x", "[a-z]", "[[:digit:]]", "[[:alpha:]]", ".", "\\.",
          "(a|ab)", "(ab|a)", "(x)", "(é|ñ)", "\\w", "\\d", "[^@]", "@", "ñandú", "é", "É",
          "(b)?", "\\<", "\\>", "\\b", "{", "a{1,2}", "\\1", "(?i)", "\\Z", "\\z", "[", "\\"]
_QUANT = ["", "", "", "*", "+", "?", "{2}", "*?", "+?", "++", "{1,}"]


def _regex(rng: random.Random, delim: str) -> str:
    parts = [rng.choice(["", "", "^"])]
    for _ in range(rng.randrange(1, 5)):
        parts.append(rng.choice(_ATOMS) + rng.choice(_QUANT))
    parts.append(rng.choice(["", "", "$", "$\\n"]))
    text = "".join(parts)
    return text.replace(delim, "\\" + delim) if delim != "\\" else text


def _result(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randrange(0, 4)):
        pieces.append(rng.choice([
            "OK", "REJECT", "PRICE", "ñandú", f"${rng.randrange(0, 4)}", f"${{{rng.randrange(1, 4)}}}",
            f"$({rng.randrange(1, 3)})", "$$", "$$5", "for", "$", "${1", "$x", "$01", "$1x"]))
    return " ".join(pieces)


def _pattern_table(rng: random.Random, pcre: bool) -> str:
    """regexp/pcre rules with random flags, delimiters, negations, `$` escapes, if/endif."""
    letters = "imsxAEUXq" if pcre else "imxq!"
    lines = []
    depth = 0
    for _ in range(rng.randrange(10, 60)):
        delim = rng.choice(["/"] * 8 + ["#", "|", "%", ",", "\\"])
        flags = "".join(rng.choice(letters) for _ in range(rng.choice([0, 0, 1, 2, 3])))
        if not pcre and "!" in flags:
            flags = flags.replace("!", "") + "!" + delim + _regex(rng, delim) + delim
        neg = rng.choice(["", "", "", "!", "! ", "!!"])
        regex = f"{neg}{delim}{_regex(rng, delim)}{delim}{flags}"
        roll = rng.random()
        if roll < 0.1:
            lines.append(f"{rng.choice(['if', 'IF', 'if '])} {regex}{rng.choice(['', '', ' extra'])}")
            depth += 1
        elif roll < 0.18 and (depth or rng.random() < 0.2):
            lines.append(rng.choice(["endif", "ENDIF", "endif junk"]))
            depth = max(depth - 1, 0)
        elif roll < 0.2:
            lines.append(rng.choice(["bogus line", "/unterminated", "!", "ifx /a/ b",
                                     " /continued/ line", "/x/ trailing\\"]))
        else:
            lines.append(f"{regex} {_result(rng)}".rstrip())
    return "\n".join(lines) + "\n"


def _pattern_keys(rng: random.Random, table: str) -> list[str]:
    keys = []
    for _ in range(N_KEYS // 10):
        key = "".join(rng.choice([*_WORDS, "@", ".", "x", "a"]) for _ in range(rng.randrange(1, 6)))
        keys.append(key)
    return keys


CASES = {
    "cidr": (_cidr_table, _cidr_keys),
    "regexp": (_regexp_table, lambda rng, table: _address_keys(rng)),
    "pcre": (_regexp_table, lambda rng, table: _address_keys(rng)),
    "texthash": (_hash_table, lambda rng, table: _hash_keys(rng)),
}
# table generators that provoke warnings: stderr is compared too
ODD_CASES = {
    "cidr": (_odd_cidr_table, _odd_cidr_keys),
    "regexp": (lambda rng: _pattern_table(rng, False), _pattern_keys),
    "pcre": (lambda rng: _pattern_table(rng, True), _pattern_keys),
}
_SEEDS = os.environ.get("MAILGATE_POSTMAP_SEEDS", "").split()  # "1 2 3 ...": run by hand
SEEDS = [int(x) for x in _SEEDS or ["1", "2"]]
ODD_SEEDS = [int(x) for x in _SEEDS or ["1", "2", "3", "4", "5"]]


def _main_cf(directory: Path, text: str = "") -> None:
    """The main.cf `postmap -c` reads, dated in the past: Postfix waits while a main.cf
    looks freshly written (~1.5 s per run)."""
    cf = directory / "main.cf"
    if not cf.exists() or cf.read_text() != text:
        cf.write_text(text)
        os.utime(cf, (1e9, 1e9))


def _postmap_both(tmp_path: Path, spec: str, args: list[str], keys: str | None,
                  main_cf: str = "") -> tuple[subprocess.CompletedProcess[str], ...]:
    postmap = require("postmap")
    ours = subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", *args, spec],
                          input=keys, capture_output=True, text=True, timeout=120)
    _main_cf(tmp_path, main_cf)
    theirs = subprocess.run([postmap, "-c", str(tmp_path), *args, spec], input=keys,
                            capture_output=True, text=True, timeout=120)
    return ours, theirs


def _warnings(stderr: str) -> list[str]:
    """Every warning, postmap's complaint about empty results included."""
    return [line.replace("mailgate/postmap:", "postmap:") for line in stderr.splitlines()]


@pytest.mark.interop
@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("seed", SEEDS)
def test_postmap_query_matches_postfix(tmp_path: Path, kind: str, seed: int) -> None:
    rng = random.Random(f"{kind}-{seed}")
    make_table, make_keys = CASES[kind]
    table = make_table(rng)
    path = tmp_path / f"table.{kind}"
    path.write_text(table)
    keys = "\n".join(make_keys(rng, table)) + "\n"
    ours, theirs = _postmap_both(tmp_path, f"{kind}:{path}", ["-q", "-"], keys)
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)
    assert ours.stdout.splitlines() == theirs.stdout.splitlines()
    assert len(ours.stdout.splitlines()) > 10  # the generated keys do hit the table


@pytest.mark.interop
@pytest.mark.parametrize("kind", sorted(ODD_CASES))
@pytest.mark.parametrize("seed", ODD_SEEDS)
def test_odd_tables_and_keys_match_postfix(tmp_path: Path, kind: str, seed: int) -> None:
    """Odd table lines (warnings on stderr) and odd keys, by `-q -` and by `-q KEY`."""
    rng = random.Random(f"odd-{kind}-{seed}")
    make_table, make_keys = ODD_CASES[kind]
    path = tmp_path / f"table.{kind}"
    path.write_text(make_table(rng))
    spec = f"{kind}:{path}"
    keys = make_keys(rng, path.read_text())
    ours, theirs = _postmap_both(tmp_path, spec, ["-q", "-"], "\n".join(keys) + "\n")
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)
    assert ours.stdout.splitlines() == theirs.stdout.splitlines()
    assert _warnings(ours.stderr) == _warnings(theirs.stderr)
    for key in rng.sample(keys, 2):
        if not key.strip() or key.startswith("-"):
            continue
        ours, theirs = _postmap_both(tmp_path, spec, ["-q", key], None)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), key


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
    _main_cf(tmp_path)
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
    _main_cf(theirs_dir)
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
