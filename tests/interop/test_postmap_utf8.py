"""Differential: non-ASCII, mixed-case and invalid-UTF-8 keys in every fixed-key table type.

Random tables (hash, btree, lmdb built by each side's own postmap; texthash; inline) and random
case variants of their keys are given to `mailgate postmap` and Postfix's `postmap`, with
smtputf8_enable on, off, and left to compatibility_level; stdout, exit code and the warnings
must be the same. CI runs one seed of a subset; MAILGATE_UTF8_SEEDS=N runs N seeds of every
table type and main.cf variant.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

_BY_HAND = "MAILGATE_UTF8_SEEDS" in os.environ
SEEDS = range(1, 1 + int(os.environ.get("MAILGATE_UTF8_SEEDS", "1")))

# main.cf texts: smtputf8 on, off, and the compatibility_level default (unset: off; >= 1: on)
MAIN_CF = {"on": "smtputf8_enable = yes\n", "off": "smtputf8_enable = no\n",
           "unset": "", "level": "compatibility_level = 3.6\n"}
MODES = sorted(MAIN_CF) if _BY_HAND else ["off", "on", "unset"]
KINDS = ["btree", "hash", "lmdb", "texthash"] if _BY_HAND else ["hash", "lmdb", "texthash"]

LETTERS = ["a", "Z", "k", "S", "i", "I", "ß", "ẞ", "İ", "ı", "Σ", "σ", "ς", "ǅ", "ǆ", "Ǆ", "Ä",
           "ä", "Ö", "É", "é", "ﬁ", "Ｆ", "ｆ", "K", "Ω", "µ", "Μ", "Ꭰ", "ꭰ", "𐐀", "𐐨", "ŉ",
           "e\u0301", "\u0345", "Я", "я", "ǰ", "ΐ", "ẞ", "ſ", "ﬀ", "Ꮿ", "ᏸ"]
BAD = [b"\x80", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xff", b"\xe9", b"\xf4\x90\x80\x80",
       b"\xc3", b"\xf8\x88\x80\x80\x80"]


def _word(rng: random.Random, bad: float) -> bytes:
    out = b""
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < bad:
            out += rng.choice(BAD)
        elif r < 0.5:
            out += rng.choice(LETTERS).encode()
        else:
            out += rng.choice("abcdefxyzABCXYZ0.-@").encode()
    return out


def _variant(rng: random.Random, key: bytes) -> bytes:
    """The key in another case: upper, lower, casefolded, swapped or per character."""
    text = key.decode("utf-8", "surrogateescape")
    how = rng.randrange(6)
    if how == 0:
        text = text.upper()
    elif how == 1:
        text = text.lower()
    elif how == 2:
        text = text.casefold()
    elif how == 3:
        text = text.swapcase()
    elif how == 4:
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    return text.encode("utf-8", "surrogateescape")


def _source(rng: random.Random, n: int, bad: float) -> tuple[bytes, list[bytes]]:
    lines, keys = [], []
    for i in range(n):
        key = _word(rng, bad)
        value = b"v%d" % i + (_word(rng, bad / 4) if rng.random() < 0.2 else b"")
        keys.append(key)
        r = rng.random()
        if r < 0.02:
            lines.append(key)  # no value
        elif r < 0.04 and keys:
            lines.append(rng.choice(keys) + b"\tdup%d" % i)
        else:
            lines.append(key + rng.choice([b" ", b"\t"]) + value)
    return b"\n".join(lines) + b"\n", keys


def _queries(rng: random.Random, keys: list[bytes], n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.7 and keys:
            out.append(_variant(rng, rng.choice(keys)))
        else:
            out.append(_word(rng, 0.1))
    return out


def _run(cmd: list[str], stdin: bytes | None = None) -> tuple[int, bytes, list[bytes]]:
    done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120)
    errs = [line.replace(b"mailgate/postmap:", b"postmap:")
            for line in done.stderr.splitlines() if b"BDB" not in line]
    return done.returncode, done.stdout, errs


def _both(tmp: Path, args: list[str], stdin: bytes | None = None) -> None:
    """Run the same postmap command line in ours/ and theirs/ and compare what both print."""
    postmap = require("postmap")
    res = []
    for side, prog in (("ours", [sys.executable, "-m", "mailgate.cli", "postmap"]),
                       ("theirs", [postmap])):
        d = tmp / side
        side_args = [a.replace("DIR", str(d)) for a in args]
        rc, out, errs = _run([*prog, "-c", str(d), *side_args], stdin)
        res.append((rc, out, [e.replace(str(d).encode(), b"DIR") for e in errs]))
    assert res[0] == res[1], (args, res)


def _setup(tmp: Path, mode: str, source: bytes) -> None:
    for side in ("ours", "theirs"):
        d = tmp / side
        d.mkdir(exist_ok=True)
        (d / "main.cf").write_text(MAIN_CF[mode])
        (d / "table").write_bytes(source)


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_fixed_tables_fold_as_postfix(tmp_path: Path, kind: str, mode: str, seed: int) -> None:
    rng = random.Random(f"utf8-{kind}-{mode}-{seed}")
    source, keys = _source(rng, rng.randint(5, 60), bad=rng.choice([0.0, 0.03, 0.1]))
    _setup(tmp_path, mode, source)
    if kind != "texthash":
        _both(tmp_path, [f"{kind}:DIR/table"])
    queries = _queries(rng, keys, 200)
    _both(tmp_path, ["-q", "-", f"{kind}:DIR/table"], b"\n".join(queries) + b"\n")
    for key in rng.sample(queries, 3 if _BY_HAND else 1):
        if b"\n" not in key and key[:1] != b"-":
            _both(tmp_path, ["-q", key.decode("utf-8", "surrogateescape"), f"{kind}:DIR/table"])


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["on", "off"])
def test_inline_and_union_fold_as_postfix(tmp_path: Path, mode: str, seed: int) -> None:
    rng = random.Random(f"utf8-inline-{mode}-{seed}")
    keys = [k for k in (_word(rng, 0.05) for _ in range(8)) if not set(k) & set(b"=,{} ")]
    pairs = ", ".join(f"{k.decode('utf-8', 'surrogateescape')}=v{i}" for i, k in enumerate(keys))
    _setup(tmp_path, mode, b"")
    queries = b"\n".join(_queries(rng, keys, 60)) + b"\n"
    for spec in (f"inline:{{{pairs}}}", f"unionmap:{{inline:{{{pairs}}}, static:s}}",
                 f"pipemap:{{inline:{{{pairs}}}, inline:{{v1=one, V2=two}}}}"):
        _both(tmp_path, ["-q", "-", spec], queries)


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
def test_table_built_without_smtputf8_queried_with_it(tmp_path: Path, seed: int) -> None:
    """Keys stored ASCII-folded and values that are not UTF-8, then read with smtputf8 on."""
    rng = random.Random(f"utf8-cross-{seed}")
    source, keys = _source(rng, 30, bad=0.1)
    _setup(tmp_path, "off", source)
    _both(tmp_path, ["hash:DIR/table"])
    for side in ("ours", "theirs"):
        (tmp_path / side / "main.cf").write_text(MAIN_CF["on"])
    for key in rng.sample(keys, 5):
        _both(tmp_path, ["-q", "-", "hash:DIR/table"], _variant(rng, key) + b"\n")
    _both(tmp_path, ["-d", "-", "hash:DIR/table"], b"\n".join(keys[:5]) + b"\n")
