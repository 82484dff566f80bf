"""Seeded random and mutational input generation, shared by tests/fuzz and scripts/fuzz.

A `Target` is one parser with a `run(data)` that raises only on a defect (the documented
errors are caught and checked inside), a corpus of valid seeds and a grammar-ish generator.
`next_input()` draws an input: a mutated seed (bit flips, insert/delete, splice, CR/LF/NUL
and 8-bit injection, huge repetitions), a generated one, or plain random bytes. Everything
is driven by a `random.Random`, so a seed reproduces a run exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Bytes that parsers treat specially: line ends, NUL, 8-bit, quoting, SMTP end of data,
# table syntax, expansion, DNS compression pointers.
INTERESTING: tuple[bytes, ...] = (
    b"\r\n", b"\n", b"\r", b"\0", b"\x80", b"\xff", b"\xc0", b"\xc3\xa9", b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80", b".", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n\x00.\r\n",
    b"<", b">", b"<>", b'"', b"\\", b":", b"=", b"@", b"[", b"]", b"{", b"}", b"${", b"$(",
    b"$", b"(", b")", b"/", b"!", b" ", b"\t", b"#", b"%", b",", b";", b"?", b"IPv6:",
    b"if ", b"endif", b"\xc0\x0c", b"\x3f", b"\x40", b"\xff\xff", b"0", b"4294967295",
    b"-1", b"::", b"::ffff:", b"127.0.0.1", b"/0", b"/33", b"/129",
)


@dataclass(frozen=True)
class Target:
    """One fuzzed parser."""

    name: str
    run: Callable[[bytes], None]  # raises only on a defect
    seeds: Sequence[bytes]
    generate: Callable[[random.Random], bytes]
    max_len: int = 4096  # mutated inputs are cut here (huge repetitions included)
    doc: str = ""
    invariants: tuple[str, ...] = field(default=())


def random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def _mutate_once(rng: random.Random, buf: bytearray, corpus: Sequence[bytes],
                 max_len: int) -> None:
    n = len(buf)
    op = rng.randrange(11)
    if op == 0 and n:  # flip a bit
        i = rng.randrange(n)
        buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and n:  # set a byte
        buf[rng.randrange(n)] = rng.randrange(256)
    elif op in (2, 3):  # insert an interesting token
        i = rng.randrange(n + 1)
        buf[i:i] = rng.choice(INTERESTING)
    elif op == 4:  # insert random bytes
        i = rng.randrange(n + 1)
        buf[i:i] = random_bytes(rng, rng.randrange(1, 9))
    elif op == 5 and n:  # delete a range
        i = rng.randrange(n)
        del buf[i : i + rng.randrange(1, 17)]
    elif op == 6 and n:  # duplicate a range elsewhere
        i = rng.randrange(n)
        part = bytes(buf[i : i + rng.randrange(1, 33)])
        j = rng.randrange(n + 1)
        buf[j:j] = part
    elif op == 7 and corpus:  # splice with another seed
        other = rng.choice(corpus)
        i, j = rng.randrange(n + 1), rng.randrange(len(other) + 1)
        buf[i:] = other[j:]
    elif op == 8 and n:  # huge repetition of a slice, up to max_len
        i = rng.randrange(n)
        part = bytes(buf[i : i + rng.randrange(1, 9)])
        times = rng.choice((2, 16, 256, max_len))
        buf[i:i] = part * min(times, max(1, (max_len - n) // len(part)))
    elif op == 9 and n:  # 8-bit injection
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(n)] |= 0x80
    elif op == 10 and n:  # truncate
        del buf[rng.randrange(n) :]


def mutate(rng: random.Random, data: bytes, corpus: Sequence[bytes] = (),
           max_len: int = 4096) -> bytes:
    """One to eight stacked mutations of `data`, cut to `max_len` bytes."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        _mutate_once(rng, buf, corpus, max_len)
        if len(buf) > max_len:
            del buf[max_len:]
    return bytes(buf)


def next_input(target: Target, rng: random.Random) -> bytes:
    """An input for `target`: 60 % mutated seeds, 30 % generated, 10 % random bytes."""
    r = rng.random()
    if r < 0.6 and target.seeds:
        return mutate(rng, rng.choice(target.seeds), target.seeds, target.max_len)
    if r < 0.9:
        data = target.generate(rng)
        return mutate(rng, data, target.seeds, target.max_len) if rng.random() < 0.3 else data
    return random_bytes(rng, rng.choice((0, 1, 2, 8, 32, 128, 512)))


def lines_of(rng: random.Random, pieces: Sequence[Callable[[random.Random], str]],
             most: int = 8, sep: str = "\n") -> bytes:
    """1..most lines, each made by one of `pieces`, joined by `sep` (UTF-8)."""
    out = [rng.choice(pieces)(rng) for _ in range(rng.randrange(1, most + 1))]
    return (sep.join(out) + sep).encode("utf-8", "surrogateescape")


def word(rng: random.Random, alphabet: str = "abcxyz019.-_+@%!", most: int = 12) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, most + 1)))


def ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.choice((0, 1, 10, 127, 192, 255, rng.randrange(256)))) for _ in range(4))


def ipv6(rng: random.Random) -> str:
    return rng.choice(("::1", "::", "2001:db8::", "fe80::1", "::ffff:1.2.3.4",
                       "2001:db8:0:0:1:0:0:1", f"2001:db8::{rng.randrange(65536):x}"))


def split_points(data: bytes, salt: int = 0) -> list[bytes]:
    """`data` cut into pieces at points derived from its own bytes (deterministic), so that
    every parser that reads a stream also sees its input arrive in odd-sized reads."""
    pieces, i, n = [], 0, len(data)
    step = (data[0] if data else 0) + salt
    while i < n:
        size = 1 + (step * 7 + i) % 97
        pieces.append(data[i : i + size])
        i += size
        step = data[min(i, n - 1)] if n else 0
    return pieces
