"""Round-trip and error-contract properties of the parsers: the policy protocol both ways,
compiled tables, addresses, main.cf errors with file:line, the DNS decoder on mutated real
replies, and the SMTP core's memory bound under megabytes without a newline."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.config.config import Config
from mailgate.dns import wire
from mailgate.errors import ConfigError
from mailgate.maps.compiled import CompiledMap, build
from mailgate.maps.simple import parse_source
from mailgate.policy.protocol import PolicyReader, Request, encode
from mailgate.smtp.protocol import NEED_DATA, Closed, Command, Message, Mode, ServerConnection
from mailgate.smtp.tokens import extract_addr, parse_addr, quote_local_part
from support.fuzz_seeds import DNS_SEEDS
from support.fuzz_tables import run_maincf
from support.fuzz_targets import run_dns
from support.fuzzing import mutate, split_points

NAME = st.text(st.characters(codec="utf-8", exclude_characters="=\n"), min_size=1, max_size=20)
VALUE = st.text(st.characters(codec="utf-8"), max_size=60)


@given(requests=st.lists(st.dictionaries(NAME, VALUE, min_size=1, max_size=8), max_size=4),
       salt=st.integers(0, 99))
def test_policy_encode_then_read_gives_the_attributes_back(
        requests: list[dict[str, str]], salt: int) -> None:
    stream = b"".join(encode(attrs) for attrs in requests)
    reader = PolicyReader()
    got: list[object] = []
    for piece in split_points(stream, salt):
        got += reader.feed(piece)
    want = [Request({k: v.replace("\n", " ").replace("\r", " ") for k, v in attrs.items()})
            for attrs in requests]
    assert got == want


@given(data=st.binary(max_size=600), salt=st.integers(0, 99))
def test_policy_reader_does_not_depend_on_how_bytes_arrive(data: bytes, salt: int) -> None:
    whole = PolicyReader().feed(data)
    reader = PolicyReader()
    split: list[object] = []
    for piece in split_points(data, salt):
        split += reader.feed(piece)
    assert whole == split


@given(text=st.binary(max_size=800))
def test_compiled_table_finds_every_source_entry(tmp_path_factory: pytest.TempPathFactory,
                                                 text: bytes) -> None:
    entries, _ = parse_source(text.decode("utf-8", "surrogateescape"), "fuzz/table", True)
    path = str(tmp_path_factory.mktemp("db") / "table.db")
    build(path, entries)
    table = CompiledMap("hash:table", path)
    assert {k: table.lookup(k) for k in entries} == entries
    assert dict(table.items()) == entries


LOCAL = st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S", "Zs"]),
                min_size=1, max_size=20)


@given(local=LOCAL, domain=st.from_regex(r"[a-z0-9]{1,10}(\.[a-z]{2,5}){0,2}", fullmatch=True))
def test_quoted_address_extracts_back(local: str, domain: str) -> None:
    """quote_local_part() → <...> → extract_addr(): the same internal form, one address."""
    address = f"{local}@{domain}"
    got = extract_addr(f"<{quote_local_part(address)}>")
    assert (got.address, got.illegal) == (address, False)


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
NEAR_SIMPLE = st.text(st.sampled_from(ATEXT + '.@<>"\\ ()[]:,;'), max_size=30)


@given(token=st.one_of(
    st.from_regex(r"<([a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-zA-Z0-9_~-]+)*"
                  r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?>", fullmatch=True),
    NEAR_SIMPLE, NEAR_SIMPLE.map(lambda t: f"<{t}>")), strict=st.booleans())
def test_extract_addr_fast_path_agrees_with_tok822(token: str, strict: bool) -> None:
    """extract_addr()'s fast path for `<dot-atom@domain>` gives what tok822 gives."""
    assert extract_addr(token, strict) == parse_addr(token, strict)


@given(data=st.binary(max_size=400))
def test_main_cf_errors_name_file_and_line(tmp_path_factory: pytest.TempPathFactory,
                                           data: bytes) -> None:
    """Config.load on a real file: it loads or raises ConfigError with `main.cf, line N`."""
    run_maincf(data)  # the in-memory path, every invariant
    conf = tmp_path_factory.mktemp("conf")
    (conf / "main.cf").write_bytes(b"myhostname = mx.example.test\n" + data)
    try:
        Config.load(str(conf), environ={})
    except ConfigError as exc:
        assert re.match(rf"{re.escape(str(conf))}/main\.cf, line \d+: ", str(exc)), str(exc)


@given(seed=st.sampled_from(DNS_SEEDS), rng=st.randoms(use_true_random=False))
def test_dns_decoder_on_mutated_and_truncated_replies(seed: bytes, rng: random.Random) -> None:
    run_dns(seed)
    assert wire.parse(seed).answer or wire.parse(seed).authority or wire.parse(seed).flags & wire.TC
    for cut in (rng.randrange(len(seed)), 12, len(seed) - 1):
        run_dns(seed[:cut])
    run_dns(mutate(rng, seed, DNS_SEEDS, 1024))


def test_dns_pointer_loop_is_a_wire_error() -> None:
    packet = bytes.fromhex("1234 8180 0001 0000 0000 0000") + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(wire.WireError):
        wire.parse(packet)


@pytest.mark.parametrize("mode", ["command", "data", "bdat-discard"])
def test_smtp_core_memory_stays_bounded_under_megabytes_without_newline(mode: str) -> None:
    """8 MiB in 64 KiB reads without a line end: what the core holds never exceeds the
    line limit (commands), the size limit plus the end-of-data lookbehind (DATA), or
    nothing (a BDAT chunk being discarded)."""
    line, size = 2048, 1_000_000
    conn = ServerConnection(line, size)
    bound = {"command": line, "data": size + 6, "bdat-discard": 0}[mode]
    if mode == "data":
        conn.start_data()
    elif mode == "bdat-discard":
        conn.start_chunk(1 << 40, last=True, discard=True)
    peak = 0
    for _ in range(128):
        conn.receive_data(b"\x80A\r" * 21845 + b"A")
        assert conn.next_event() is NEED_DATA
        peak = max(peak, len(conn._buf) + len(conn._long_head or b""))
    assert peak <= bound
    if mode == "command":
        conn.receive_data(b"\r\n")
        ev = conn.next_event()
        assert isinstance(ev, Command) and ev.too_long and len(ev.line) <= line
    elif mode == "data":
        conn.receive_data(b"\r\n.\r\n")
        ev = conn.next_event()
        assert isinstance(ev, Message) and ev.too_big and ev.content == b""
        assert conn.mode is Mode.COMMAND
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Closed | type(NEED_DATA))


def test_profile_is_deterministic_without_a_database() -> None:
    from hypothesis import settings

    if settings().max_examples < 1000:  # the "ci" profile
        assert settings().database is None and settings().derandomize
