"""Every crash the fuzzers found, with its exact input (docs/reliability/fuzz.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.config import Config
from mailgate.errors import ConfigError
from mailgate.policy.protocol import MAX_LINE, PolicyReader, ProtocolError, Request
from mailgate.smtp.tokens import extract_addr, quote_local_part
from support.fuzz_tables import run_maincf
from support.fuzz_targets import run_policy_reader

# scripts/fuzz --seed 1, maincf: OverflowError (float infinity to int) escaped Config.get_time
HUGE_TIME = (b"message_size_limit = 10240000\nsmtpd_timeout = 3" + b"0" * 3939 + b"s\n"
             b"smtpd_banner = ${myhostname?{$myhostname ESMTP}:{x}}\n"
             b"foo = ${{$message_size_limit} > {5} ? {big} : {small}}\n")


def test_time_with_more_digits_than_a_float_is_a_config_error(tmp_path: Path) -> None:
    run_maincf(HUGE_TIME)
    (tmp_path / "main.cf").write_bytes(HUGE_TIME)
    with pytest.raises(ConfigError, match=r"main\.cf, line 2: bad time configuration: "
                                          r"smtpd_timeout = 30"):
        Config.load(str(tmp_path), environ={})


# Hypothesis (test_targets, maincf): a bad `$` expression in a parameter that only a default
# value refers to was reported as "default: parameter virtual_mailbox_domains: ..."
def test_bad_expansion_is_reported_at_its_own_line() -> None:
    run_maincf(b"\n\n\nvirtual_mailbox_maps = ${ca@!c@919\n  continued\n# comment\n"
               b"smtpd_banner = ${myhostname?{x}:{y}}_@.+yzx\n# c\n")


# fuzz_targets.run_policy_reader: the reader's answer depended on how the bytes arrived
def test_policy_error_text_is_the_same_on_both_paths() -> None:
    data = (b"request\xd9smtpd_access_policy\n\xf0rotocol_state=RCPT\nclient_address=192.0.2.1"
            b"\nsender=a@example.test\nrecipient=b@example.test\n\n")
    run_policy_reader(data)
    assert PolicyReader().feed(data) == [
        ProtocolError("malformed attribute line: b'request\\xd9smtpd_access_policy'")]


def test_policy_skipped_line_split_across_reads_does_not_end_the_request() -> None:
    data = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n"
            + b"s.1\n" * 200 + b"x=1\n\n")
    run_policy_reader(data)
    reader = PolicyReader()
    got = reader.feed(data[:80]) + reader.feed(data[80:83]) + reader.feed(data[83:])
    assert got == [ProtocolError("malformed attribute line: b's.1'")]


def test_policy_cr_of_the_empty_line_in_its_own_read() -> None:
    data = b"=_c_ca_cb=a=xy.zy@y=\r\n_ab__=c=.=.\r\n\r\n" * 2
    run_policy_reader(data)
    reader = PolicyReader()
    got = [*reader.feed(data[:36]), *reader.feed(data[36:37]), *reader.feed(data[37:])]
    assert len(got) == 2 and all(isinstance(r, ProtocolError) for r in got)


def test_policy_line_of_max_length_with_cr_in_pieces() -> None:
    line = b"a=" + b"v" * (MAX_LINE - 2)
    data = line + b"\r\n\r\n"
    reader = PolicyReader()
    assert reader.feed(data[:-3]) + reader.feed(data[-3:]) == [Request({"a": "v" * (MAX_LINE - 2)})]
    assert PolicyReader().feed(data) == [Request({"a": "v" * (MAX_LINE - 2)})]


# test_properties.test_quoted_address_extracts_back: `[` and `]` (and DEL) were left unquoted,
# so `[@0` went out as <[@0> and came back as an illegal address (Postfix quotes them)
@pytest.mark.parametrize("local", ["[", "a]b", "x\x7fy"])
def test_brackets_and_del_in_a_local_part_are_quoted(local: str) -> None:
    quoted = quote_local_part(f"{local}@0")
    assert quoted.startswith('"')
    assert extract_addr(f"<{quoted}>").address == f"{local}@0"


def test_policy_request_carries_raw_bytes_of_an_8bit_address() -> None:
    """smtputf8_enable = no lets 8-bit bytes through (kept as surrogates); the request must
    carry them as they came, not raise UnicodeEncodeError."""
    from mailgate.policy.protocol import encode

    sender = b"\xffa@example.test".decode("utf-8", "surrogateescape")
    assert encode({"sender": sender}) == b"sender=\xffa@example.test\n\n"


def test_cr_in_a_quoted_local_part_is_escaped_as_postfix_does() -> None:
    """quote_822_local.c: `"`, `\\` and CR get a backslash inside the quotes."""
    from mailgate.smtp.tokens import quote_local_part

    assert quote_local_part("a\rb c@example.test") == '"a\\\rb c"@example.test'
