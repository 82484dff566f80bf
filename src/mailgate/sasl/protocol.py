"""The Dovecot authentication protocol, client side, as Postfix's xsasl_dovecot_server.c speaks it (sans-IO).

Bytes in: `LineReader` cuts lines; `HandshakeReader` turns the server's handshake into a
`Handshake`; `parse_reply()` turns an `OK`/`CONT`/`FAIL` line into a `Reply` and `outcome()`
into what smtpd answers. Bytes out: `client_handshake()`, `format_auth()`, `format_cont()`.
`SecurityOptions` and `offered_mechanisms()` are Postfix's mechanism filter. No I/O, no asyncio.

Errors: `ProtocolError` is the caller's misuse (a value that cannot be sent: Postfix never
escapes, it sends only values it has checked); `RemoteProtocolError` is the server's fault and
carries Postfix's warning text.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailgate.errors import ConfigError

PROTOCOL_MAJOR = 1  # AUTH_PROTOCOL_MAJOR_VERSION: a server with another major is refused
PROTOCOL_MINOR = 0  # AUTH_PROTOCOL_MINOR_VERSION: what Postfix 3.7 sends (Dovecot ignores it)
MAX_LINE = 65536  # longer than any line Dovecot sends (AUTH_CLIENT_MAX_LINE_LENGTH is 16384)

# Postfix's reply texts (xsasl_dovecot_server.c); smtpd puts them after "535 5.7.8 Error:
# authentication failed: " or "454 4.7.0 Temporary authentication failure: ".
BACKEND_ERROR = "Authentication backend error"
CONNECTION_LOST = "Connection lost to authentication server"
CANNOT_CONNECT = "Can't connect to authentication server"
INVALID_MECHANISM = "Invalid authentication mechanism"
INVALID_INITIAL = "Invalid base64 data in initial response"
INVALID_CONTINUED = "Invalid base64 data in continued response"

_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f]")  # TAB and LF break the protocol, \x01 escapes


class ProtocolError(Exception):
    """The caller asked for something that cannot be sent (local misuse)."""


class RemoteProtocolError(Exception):
    """The server broke the protocol; the message is Postfix's warning text."""


class Property(enum.Flag):
    """Postfix's SEC_PROPS_* bits: a main.cf word forbids (no*) or requires a property."""

    NONE = 0
    PLAINTEXT = enum.auto()
    ACTIVE = enum.auto()
    DICTIONARY = enum.auto()
    ANONYMOUS = enum.auto()
    FORWARD_SECRECY = enum.auto()
    MUTUAL_AUTH = enum.auto()
    PRIVATE = enum.auto()


# smtpd_sasl_security_options words (xsasl_dovecot_conf_sec_props)
_CONF_WORDS = {
    "noplaintext": Property.PLAINTEXT, "noactive": Property.ACTIVE,
    "nodictionary": Property.DICTIONARY, "noanonymous": Property.ANONYMOUS,
    "forward_secrecy": Property.FORWARD_SECRECY, "mutual_auth": Property.MUTUAL_AUTH,
}
# Dovecot MECH flags (xsasl_dovecot_serv_sec_props); unknown flags are ignored
_MECH_FLAGS = {
    "plaintext": Property.PLAINTEXT, "active": Property.ACTIVE,
    "dictionary": Property.DICTIONARY, "anonymous": Property.ANONYMOUS,
    "forward-secrecy": Property.FORWARD_SECRECY, "mutual-auth": Property.MUTUAL_AUTH,
    "private": Property.PRIVATE,
}
_REQUIRED = Property.FORWARD_SECRECY | Property.MUTUAL_AUTH  # SEC_PROPS_POS_MASK


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    """smtpd_sasl_security_options (or smtpd_sasl_tls_security_options) as Postfix reads it."""

    props: Property = Property.ANONYMOUS  # the default: noanonymous

    @classmethod
    def parse(cls, text: str, parameter: str = "smtpd_sasl_security_options") -> SecurityOptions:
        """Words separated by commas or white space, any case; an unknown word is fatal in
        Postfix (NAME_MASK_FATAL), a ConfigError here."""
        props = Property.NONE
        for word in re.split(r"[,\s]+", text.strip()):
            if not word:
                continue
            try:
                props |= _CONF_WORDS[word.lower()]
            except KeyError:
                raise ConfigError(f'unknown {parameter} value "{word}" in "{text}"') from None
        return cls(props)

    def allows(self, mechanism: Mechanism) -> bool:
        """xsasl_dovecot_server_mech_filter(): every required property present, no
        forbidden one."""
        required = self.props & _REQUIRED
        forbidden = self.props & ~_REQUIRED
        return (mechanism.props & required) == required and not (mechanism.props & forbidden)


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One `MECH` line: the name and the properties its flags announce."""

    name: str
    props: Property = Property.NONE


@dataclass(frozen=True, slots=True)
class Handshake:
    """The server's handshake, up to `DONE`. Private mechanisms are left out, as Postfix does."""

    version: tuple[int, int]
    mechanisms: tuple[Mechanism, ...]
    spid: str = ""
    cuid: str = ""
    cookie: str = ""


def offered_mechanisms(handshake: Handshake, options: SecurityOptions) -> tuple[str, ...]:
    """The names smtpd announces after `AUTH` in EHLO, in the server's order."""
    return tuple(m.name for m in handshake.mechanisms if options.allows(m))


def client_handshake(pid: int) -> bytes:
    """What Postfix sends on connecting: its protocol version and its process id."""
    return f"VERSION\t{PROTOCOL_MAJOR}\t{PROTOCOL_MINOR}\nCPID\t{pid}\n".encode()


class LineReader:
    """Feed bytes, get the complete lines (without LF) they finish, decoded as UTF-8 with
    bad bytes kept as surrogates. A line longer than MAX_LINE is a RemoteProtocolError."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        if len(rest) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
            raise RemoteProtocolError("SASL: Protocol error: line too long")
        self._buf = bytearray(rest)
        return [line.decode("utf-8", "surrogateescape") for line in lines]


class HandshakeReader:
    """xsasl_dovecot_server_connect(): `feed(line)` returns the Handshake at `DONE` (None
    before); unknown lines are ignored. Raises RemoteProtocolError with Postfix's warning for
    a bad or other major version, and for `SPID` before any `MECH` (the auth-master or
    auth-userdb socket, which send no mechanisms)."""

    __slots__ = ("_cookie", "_cuid", "_have_mech", "_mechanisms", "_spid", "_version")

    def __init__(self) -> None:
        self._version = (0, 0)
        self._mechanisms: list[Mechanism] = []
        self._have_mech = False
        self._spid = self._cuid = self._cookie = ""

    def feed(self, line: str) -> Handshake | None:
        cmd, _, rest = line.partition("\t")
        if cmd == "VERSION":
            self._version = _version(rest)
        elif cmd == "MECH" and "\t" in line:
            self._have_mech = True
            name, *flags = rest.split("\t")
            props = Property.NONE
            for flag in flags:
                props |= _MECH_FLAGS.get(flag.lower(), Property.NONE)
            if not props & Property.PRIVATE:
                self._mechanisms.append(Mechanism(name, props))
        elif cmd == "SPID":
            if not self._have_mech:
                raise RemoteProtocolError(
                    "SASL: Connected to wrong auth socket (auth-master instead of auth-client)")
            self._spid = rest
        elif cmd == "CUID":
            self._cuid = rest
        elif cmd == "COOKIE":
            self._cookie = rest
        elif cmd == "DONE":
            return Handshake(self._version, tuple(self._mechanisms),
                             self._spid, self._cuid, self._cookie)
        return None


def _version(rest: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\t(\d+)", rest)
    if m is None:
        raise RemoteProtocolError("SASL: Protocol version error")
    major, minor = int(m[1]), int(m[2])
    if major != PROTOCOL_MAJOR:
        raise RemoteProtocolError(
            f"SASL: Protocol version mismatch ({major} vs. {PROTOCOL_MAJOR})")
    return major, minor


def is_valid_base64(data: str) -> bool:
    """Postfix's is_valid_base64(): only the base64 alphabet and `=` (not the padding)."""
    return _BASE64.fullmatch(data) is not None


def _field(name: str, value: str) -> str:
    if _UNSENDABLE.search(value):
        raise ProtocolError(f"{name} {value!r} contains a control character")
    return value


def format_auth(request_id: int, mechanism: str, *, local_addr: str, remote_addr: str,
                secured: bool = False, initial_response: str | None = None,
                service: str = "smtp") -> bytes:
    """The `AUTH` request of xsasl_dovecot_server_first(), field for field: no escaping (the
    mechanism is one the server offered, the response is checked base64, the addresses are
    IP address strings); a value that would need it raises ProtocolError. `secured` is
    Postfix's tls_flag; `initial_response` is sent as given (already base64)."""
    line = (f"AUTH\t{request_id}\t{_field('mechanism', mechanism)}\tservice={_field('service', service)}"
            f"\tnologin\tlip={_field('lip', local_addr)}\trip={_field('rip', remote_addr)}")
    if secured:
        line += "\tsecured"
    if initial_response is not None:
        if not is_valid_base64(initial_response):
            raise ProtocolError("the initial response is not base64")
        line += f"\tresp={initial_response}"
    return (line + "\n").encode()


def format_cont(request_id: int, response: str) -> bytes:
    """The `CONT` line of xsasl_dovecot_server_next(): the client's base64 answer."""
    if not is_valid_base64(response):
        raise ProtocolError("the continued response is not base64")
    return f"CONT\t{request_id}\t{response}\n".encode()


class Verb(enum.Enum):
    OK = "OK"
    CONT = "CONT"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Reply:
    """One `OK`, `CONT` or `FAIL` line. `data` is CONT's challenge (None when the line has no
    field after the id); `args` are the other fields (`name=value` or bare flags) as sent."""

    verb: Verb
    request_id: int
    data: str | None = None
    args: tuple[str, ...] = ()

    def get(self, name: str) -> str | None:
        """The value of the first `name=` field (xsasl_dovecot_parse_reply_args()), made
        printable as Postfix does; None when there is none."""
        prefix = name + "="
        for arg in self.args:
            if arg.startswith(prefix):
                return printable(arg[len(prefix):])
        return None

    @property
    def temporary(self) -> bool:
        """A FAIL for a server-side trouble: `code=temp_fail` (Dovecot 2.3) or `temp`."""
        return "temp" in self.args or self.get("code") == "temp_fail"


def parse_reply(line: str) -> Reply | None:
    """An answer line; None for another command (Postfix ignores those). An answer without
    an id raises RemoteProtocolError ("SASL: Protocol error"); an id that is not a number
    gets -1, which no request has (Postfix's strtoul() would not match either)."""
    cmd, tab, rest = line.partition("\t")
    try:
        verb = Verb(cmd)
    except ValueError:
        return None
    if not tab:
        raise RemoteProtocolError("SASL: Protocol error")
    id_text, tab, rest = rest.partition("\t")
    request_id = int(id_text) if id_text.isdigit() else -1
    if verb is Verb.CONT:
        return Reply(verb, request_id, rest if tab else None)
    return Reply(verb, request_id, None, tuple(rest.split("\t")) if tab else ())


def printable(text: str, replacement: str = "?") -> str:
    """Postfix's printable(): control characters and undecodable bytes become `?`."""
    return "".join(replacement if ch < " " or ch == "\x7f" or "\udc80" <= ch <= "\udcff"
                   else ch for ch in text)


@dataclass(frozen=True, slots=True)
class Success:
    """OK: the user is authenticated as `user` (→ 235 2.7.0)."""

    user: str


@dataclass(frozen=True, slots=True)
class Challenge:
    """CONT: send `334 <data>` and pass the client's answer on."""

    data: str


@dataclass(frozen=True, slots=True)
class Failure:
    """FAIL, or a reply Postfix counts as one (→ 535 5.7.8). `reason` is Dovecot's text ('' when
    it gave none); `user` is the name Dovecot looked up, for the log; `temporary` says Dovecot
    marked it a server-side trouble, which Postfix 3.7 still answers with 535 (decision 0053)."""

    reason: str
    user: str | None = None
    temporary: bool = False


@dataclass(frozen=True, slots=True)
class TemporaryFailure:
    """The server could not answer: unreachable, silent, closed, broken (→ 454 4.7.0).
    `sets_reply` false: Postfix leaves its reply text as it was (a failed connect), and the
    454 repeats the session's previous SASL text."""

    reason: str
    sets_reply: bool = True


Outcome = Success | Challenge | Failure | TemporaryFailure


def outcome(reply: Reply, warnings: list[str] | None = None) -> Outcome:
    """xsasl_dovecot_handle_reply() for a reply to our request: OK without `user=` and CONT
    without data are Postfix's "Authentication backend error" (warning appended)."""
    if reply.verb is Verb.OK:
        user = reply.get("user")
        if user is None:
            _warn(warnings, "missing Dovecot server OK username field")
            return Failure(BACKEND_ERROR)
        return Success(user)
    if reply.verb is Verb.CONT:
        if reply.data is None:
            _warn(warnings, "missing Dovecot server CONT reply field")
            return Failure(BACKEND_ERROR)
        return Challenge(reply.data)
    return Failure(reply.get("reason") or "", reply.get("user"), reply.temporary)


def _warn(warnings: list[str] | None, text: str) -> None:
    if warnings is not None:
        warnings.append(text)


def first_check(mechanism: str, offered: Iterable[str], initial_response: str | None
                ) -> Failure | None:
    """The checks of xsasl_dovecot_server_first() before anything is sent: the mechanism
    must be one announced (any case), the initial response base64."""
    if not any(mechanism.lower() == name.lower() for name in offered):
        return Failure(INVALID_MECHANISM)
    if initial_response is not None and not is_valid_base64(initial_response):
        return Failure(INVALID_INITIAL)
    return None
