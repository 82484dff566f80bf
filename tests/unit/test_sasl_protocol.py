"""The sans-IO Dovecot auth protocol: handshake, requests, replies, and Postfix's mechanism filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.errors import ConfigError
from mailgate.sasl.dovecot import Endpoint, parse_sasl_path
from mailgate.sasl.protocol import (
    BACKEND_ERROR,
    INVALID_INITIAL,
    INVALID_MECHANISM,
    Challenge,
    Failure,
    Handshake,
    HandshakeReader,
    LineReader,
    Mechanism,
    Property,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    SecurityOptions,
    Success,
    Verb,
    client_handshake,
    first_check,
    format_auth,
    format_cont,
    offered_mechanisms,
    outcome,
    parse_reply,
)

DOVECOT_23 = (b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
              b"MECH\tANONYMOUS\tanonymous\nMECH\tCRAM-MD5\tdictionary\tactive\n"
              b"MECH\tSCRAM-SHA-256\tmutual-auth\nMECH\tGSSAPI\tprivate\n"
              b"MECH\tX-ODD\tUNKNOWN-FLAG\tForward-Secrecy\tmutual-auth\n"
              b"SPID\t1445\nCUID\t7\nCOOKIE\t4190916c9480e27abaab1f955a143f0e\nDONE\n")


def handshake(data: bytes) -> Handshake | None:
    reader, lines = HandshakeReader(), LineReader()
    for line in lines.feed(data):
        result = reader.feed(line)
        if result is not None:
            return result
    return None


def test_client_handshake_is_postfixs() -> None:
    assert client_handshake(4242) == b"VERSION\t1\t0\nCPID\t4242\n"


def test_server_handshake() -> None:
    shake = handshake(DOVECOT_23)
    assert shake is not None
    assert shake.version == (1, 2)
    assert (shake.spid, shake.cuid, shake.cookie) == ("1445", "7", "4190916c9480e27abaab1f955a143f0e")
    assert [m.name for m in shake.mechanisms] == [
        "PLAIN", "LOGIN", "ANONYMOUS", "CRAM-MD5", "SCRAM-SHA-256", "X-ODD"]  # no private GSSAPI
    assert shake.mechanisms[3] == Mechanism("CRAM-MD5", Property.DICTIONARY | Property.ACTIVE)
    # flags in any case; unknown ones ignored
    assert shake.mechanisms[5].props == Property.FORWARD_SECRECY | Property.MUTUAL_AUTH


def test_handshake_split_anywhere_waits_for_done() -> None:
    reader, lines = HandshakeReader(), LineReader()
    results = [reader.feed(line) for i in range(len(DOVECOT_23))
               for line in lines.feed(DOVECOT_23[i:i + 1])]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == handshake(DOVECOT_23)


@pytest.mark.parametrize(("data", "warning"), [
    # auth-master and auth-userdb answer VERSION and SPID and no MECH
    (b"VERSION\t1\t2\nSPID\t99\n",
     "SASL: Connected to wrong auth socket (auth-master instead of auth-client)"),
    (b"VERSION\t2\t0\nMECH\tPLAIN\n", "SASL: Protocol version mismatch (2 vs. 1)"),
    (b"VERSION\tone\n", "SASL: Protocol version error"),
])
def test_bad_handshakes(data: bytes, warning: str) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        handshake(data)
    assert str(e.value) == warning


def test_a_handshake_without_done_is_not_finished() -> None:
    assert handshake(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\n") is None


def test_long_lines_are_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        LineReader().feed(b"x" * 70000)


def test_auth_request_as_postfix_sends_it() -> None:
    assert format_auth(7, "PLAIN", local_addr="192.0.2.1", remote_addr="2001:db8::5",
                       secured=True, initial_response="AGJvYgBodW50ZXIy") == (
        b"AUTH\t7\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=2001:db8::5\tsecured"
        b"\tresp=AGJvYgBodW50ZXIy\n")
    assert format_auth(8, "login", local_addr="", remote_addr="10.0.0.1") == (
        b"AUTH\t8\tlogin\tservice=smtp\tnologin\tlip=\trip=10.0.0.1\n")


@pytest.mark.parametrize("kwargs", [
    {"mechanism": "PLAIN\tresp=x"}, {"remote_addr": "1.2.3.4\nAUTH"},
    {"local_addr": "\x01t"}, {"initial_response": "not base64!"},
])
def test_nothing_needing_escapes_is_sent(kwargs: dict[str, str]) -> None:
    # Postfix escapes nothing: it sends only values it has checked; a caller who hands in
    # anything else gets an error instead of a broken or smuggled request.
    args = {"mechanism": "PLAIN", "local_addr": "127.0.0.1", "remote_addr": "127.0.0.2"} | kwargs
    mechanism = args.pop("mechanism")
    with pytest.raises(ProtocolError):
        format_auth(1, mechanism, **args)


def test_cont_request() -> None:
    assert format_cont(3, "Ym9i") == b"CONT\t3\tYm9i\n"
    with pytest.raises(ProtocolError):
        format_cont(3, "Ym9i\tx")


def test_first_check_is_postfixs() -> None:
    assert first_check("login", ["PLAIN", "LOGIN"], None) is None
    assert first_check("CRAM-MD5", ["PLAIN", "LOGIN"], None) == Failure(INVALID_MECHANISM)
    assert first_check("PLAIN", ["PLAIN"], "AGJvYg==") is None
    assert first_check("PLAIN", ["PLAIN"], "AGJv Yg") == Failure(INVALID_INITIAL)


@pytest.mark.parametrize(("line", "reply"), [
    ("OK\t1\tuser=bob", Reply(Verb.OK, 1, None, ("user=bob",))),
    ("CONT\t2\tVXNlcm5hbWU6", Reply(Verb.CONT, 2, "VXNlcm5hbWU6")),
    ("CONT\t2\t", Reply(Verb.CONT, 2, "")),
    ("CONT\t2", Reply(Verb.CONT, 2, None)),
    ("FAIL\t3\tuser=bob\tcode=temp_fail\treason=db down", Reply(
        Verb.FAIL, 3, None, ("user=bob", "code=temp_fail", "reason=db down"))),
    ("FAIL\t4", Reply(Verb.FAIL, 4)),
    ("FAIL\tx\treason=no", Reply(Verb.FAIL, -1, None, ("reason=no",))),
    ("NOTICE\t1\tsomething", None),
])
def test_parse_reply(line: str, reply: Reply | None) -> None:
    assert parse_reply(line) == reply


def test_a_reply_without_an_id_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^SASL: Protocol error$"):
        parse_reply("OK")


@pytest.mark.parametrize(("line", "expected", "warning"), [
    ("OK\t1\tuser=alice@example.test", Success("alice@example.test"), None),
    ("OK\t1\tnologin\treason=x", Failure(BACKEND_ERROR), "missing Dovecot server OK username field"),
    ("CONT\t1\tUGFzc3dvcmQ6", Challenge("UGFzc3dvcmQ6"), None),
    ("CONT\t1", Failure(BACKEND_ERROR), "missing Dovecot server CONT reply field"),
    ("FAIL\t1\tuser=bob", Failure("", "bob"), None),
    ("FAIL\t1\treason=Password expired\tuser=bob", Failure("Password expired", "bob"), None),
    ("FAIL\t1\tcode=temp_fail\treason=db\x01tdown", Failure("db?tdown", temporary=True), None),
    ("FAIL\t1\ttemp", Failure("", temporary=True), None),
    ("FAIL\t1\tauthz\tuser=bob", Failure("", "bob"), None),
    ("OK\t1\tuser=b\x7fob\udcff", Success("b?ob?"), None),
])
def test_outcomes(line: str, expected: object, warning: str | None) -> None:
    reply = parse_reply(line)
    assert reply is not None
    warnings: list[str] = []
    assert outcome(reply, warnings) == expected
    assert warnings == ([warning] if warning else [])


def test_security_options_parse() -> None:
    assert SecurityOptions() == SecurityOptions.parse("noanonymous")  # Postfix's default
    assert SecurityOptions.parse("NoPlainText, noanonymous\tmutual_auth").props == (
        Property.PLAINTEXT | Property.ANONYMOUS | Property.MUTUAL_AUTH)
    assert SecurityOptions.parse("").props == Property.NONE
    with pytest.raises(ConfigError, match='unknown smtpd_sasl_tls_security_options value "nossl"'):
        SecurityOptions.parse("noanonymous nossl", "smtpd_sasl_tls_security_options")


@pytest.mark.parametrize(("options", "offered"), [
    ("", ("PLAIN", "LOGIN", "ANONYMOUS", "CRAM-MD5", "SCRAM-SHA-256", "X-ODD")),
    ("noanonymous", ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "X-ODD")),
    ("noanonymous, noplaintext", ("CRAM-MD5", "SCRAM-SHA-256", "X-ODD")),
    ("nodictionary", ("PLAIN", "LOGIN", "ANONYMOUS", "SCRAM-SHA-256", "X-ODD")),
    ("noactive", ("PLAIN", "LOGIN", "ANONYMOUS", "SCRAM-SHA-256", "X-ODD")),
    ("mutual_auth", ("SCRAM-SHA-256", "X-ODD")),
    ("mutual_auth forward_secrecy", ("X-ODD",)),
])
def test_mechanism_filter(options: str, offered: tuple[str, ...]) -> None:
    shake = handshake(DOVECOT_23)
    assert shake is not None
    assert offered_mechanisms(shake, SecurityOptions.parse(options)) == offered


@pytest.mark.parametrize(("path", "endpoint"), [
    ("private/auth", Endpoint("private/auth", unix="/var/spool/postfix/private/auth")),
    ("unix:private/auth", Endpoint("unix:private/auth", unix="/var/spool/postfix/private/auth")),
    ("/run/dovecot/auth-client", Endpoint("/run/dovecot/auth-client", unix="/run/dovecot/auth-client")),
    ("inet:127.0.0.1:12345", Endpoint("inet:127.0.0.1:12345", host="127.0.0.1", port=12345)),
    ("inet:[::1]:12345", Endpoint("inet:[::1]:12345", host="::1", port=12345)),
])
def test_sasl_path(path: str, endpoint: Endpoint) -> None:
    assert parse_sasl_path(path, Path("/var/spool/postfix")) == endpoint


@pytest.mark.parametrize("path", ["inet:127.0.0.1", "inet:host:port", "inet::25", "", "inet:h:0"])
def test_bad_sasl_path(path: str) -> None:
    with pytest.raises(ConfigError):
        parse_sasl_path(path, Path("/var/spool/postfix"))
