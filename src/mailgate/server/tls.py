"""smtpd's TLS: the server context from Postfix's parameters, and the facts Postfix logs of a session.

Python's `ssl` gives the protocol and cipher; what Postfix also logs (the key exchange group,
the server signature and its digest) comes from OpenSSL through `ctypes` on the SSL object
the `ssl` module holds, checked against `ssl`'s own answer before it is trusted; when that
is not possible the log line simply ends after the cipher.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import ssl
from dataclasses import dataclass
from typing import Any

from mailgate.config.settings import TlsSettings
from mailgate.engine.context import ClientCert
from mailgate.errors import ConfigError
from mailgate.server.ccert import ask_client_certificates, client_cert
from mailgate.server.openssl import OpenSsl, openssl

_VERSIONS = {"SSLv2": None, "SSLv3": ssl.TLSVersion.SSLv3, "TLSv1": ssl.TLSVersion.TLSv1,
             "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
             "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_ORDER = list(_VERSIONS)


def protocol_range(text: str) -> tuple[str, str]:
    """Postfix's protocol list (`>=TLSv1`, `<=TLSv1.2`, `!SSLv3, !TLSv1`, `TLSv1.2 TLSv1.3`)
    as the (lowest, highest) version allowed; Python's ssl has a range only, so an
    exclusion inside the range is not applied (docs/tls.md). ValueError: a bad word."""
    allowed = set(_ORDER)
    included: set[str] = set()
    for word in text.replace(",", " ").replace(":", " ").split():
        for prefix in (">=", "<=", "!", ""):
            if word.startswith(prefix):
                name = word[len(prefix):]
                break
        if name not in _VERSIONS:
            raise ValueError(f"unknown TLS protocol: {word}")
        index = _ORDER.index(name)
        if prefix == ">=":
            allowed -= set(_ORDER[:index])
        elif prefix == "<=":
            allowed -= set(_ORDER[index + 1:])
        elif prefix == "!":
            allowed.discard(name)
        else:
            included.add(name)
    if included:
        allowed &= included
    allowed.discard("SSLv2")
    if not allowed:
        raise ValueError("no TLS protocol left")
    ordered = [v for v in _ORDER if v in allowed]
    return ordered[0], ordered[-1]


_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59


def ticket_keys(secret: bytes, period: int) -> bytes:
    """The 80 bytes of session-ticket keys (name, HMAC key, AES key) for one period, the
    same in every worker that holds `secret` (Postfix's tlsmgr hands its smtpd processes one
    key in the same way)."""
    out = b""
    for label in (b"name", b"hmac", b"aes"):
        out += hmac.new(secret, label + period.to_bytes(8, "big"), hashlib.sha256).digest()
    return out[:16] + out[32:64] + out[64:96]


def set_ticket_keys(ctx: ssl.SSLContext, secret: bytes, period: int) -> bool:
    """Give the context this period's ticket keys; False when OpenSSL cannot be reached
    (each worker then keeps its own random keys: resumption only within a worker)."""
    keys = ticket_keys(secret, period)
    try:
        lib = openssl()
        return bool(lib.ctx_ctrl(lib.ctx_pointer(ctx), _SSL_CTRL_SET_TLSEXT_TICKET_KEYS,
                                 len(keys), keys))
    except (OSError, AttributeError, TypeError, ValueError):
        return False


def server_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The SSL context of smtpd's STARTTLS and wrapper mode, or None when TLS is off.
    ConfigError (start-up stops) for a certificate, key, protocol or cipher list that does
    not load: Postfix would only log a warning and offer no TLS, which for `encrypt` or a
    wrapper-mode port means no mail at all."""
    if not tls.enabled:
        return None
    if not tls.cert_files:
        raise ConfigError(f"{tls.origin}: TLS is on, but smtpd_tls_cert_file (or "
                          "smtpd_tls_eccert_file, smtpd_tls_chain_files) is not set")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for cert, key, origin in tls.cert_files:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{origin}: cannot load the certificate {cert} with the key "
                              f"{key}: {exc}") from exc
    for chain in tls.chain_files:
        try:
            ctx.load_cert_chain(chain)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"smtpd_tls_chain_files: cannot load {chain}: {exc}") from exc
    try:
        low, high = protocol_range(tls.protocols)
        ctx.minimum_version = _VERSIONS[low] or ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = _VERSIONS[high] or ssl.TLSVersion.MAXIMUM_SUPPORTED
    except ValueError as exc:
        raise ConfigError(f"smtpd_tls_protocols: {exc}") from exc
    try:
        ctx.set_ciphers(tls.ciphers)
    except ssl.SSLError as exc:
        raise ConfigError(f"smtpd_tls_ciphers: no cipher matches {tls.ciphers!r}") from exc
    if not tls.preempt_cipherlist:  # tls_preempt_cipherlist = no: the client's order
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.ca_file or tls.ca_path:
        with contextlib.suppress(OSError, ssl.SSLError):
            ctx.load_verify_locations(tls.ca_file or None, tls.ca_path or None)
    if tls.ask_ccert:
        try:
            ask_client_certificates(ctx, tls.req_ccert)
        except (ValueError, OSError, AttributeError, TypeError) as exc:
            raise ConfigError(f"smtpd_tls_ask_ccert: client certificates cannot be asked "
                              f"for with this Python's ssl module ({exc})") from exc
    return ctx


@dataclass(frozen=True)
class TlsInfo:
    """What Postfix logs and writes in `Received:` of an established TLS session."""

    protocol: str
    cipher: str
    bits: int
    details: str  # " key-exchange X25519 server-signature RSA-PSS (2048 bits) ...", or ""
    asked: bool = False  # a client certificate was requested (smtpd_tls_ask_ccert)
    reused: bool = False  # a resumed session (not counted as a new one)
    ccert: ClientCert | None = None  # the client certificate presented

    @property
    def trust(self) -> str:
        """Postfix's first word: Anonymous (no certificate), Untrusted, Trusted."""
        if self.ccert is None:
            return "Anonymous"
        return "Trusted" if self.ccert.trusted else "Untrusted"

    def summary(self) -> str:
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"


def describe(ssl_object: Any, tls: TlsSettings | None = None) -> TlsInfo:
    """The facts of an established session (an `ssl.SSLObject` or `ssl.SSLSocket`), with
    the client's certificate when `tls` asks for one."""
    version = ssl_object.version() or "unknown"
    name, _, bits = ssl_object.cipher() or ("unknown", "", 0)
    details = ""
    pointer: int | None = None
    with contextlib.suppress(Exception):  # no OpenSSL access: the line ends at the cipher
        pointer = openssl().ssl_pointer(ssl_object, version)
        details = _details(openssl(), pointer)
    asked = tls is not None and tls.ask_ccert
    ccert = client_cert(ssl_object, pointer, tls.fingerprint_digest) if asked and tls else None
    return TlsInfo(version, name, int(bits or 0), details, asked,
                   bool(getattr(ssl_object, "session_reused", False)), ccert)


_SIGNATURES = {"RSASSA-PSS": "RSA-PSS", "rsaEncryption": "RSA", "id-ecPublicKey": "ECDSA",
               "ED25519": "ED25519", "ED448": "ED448"}
_X_GROUPS = {"X25519", "X448"}
_SSL_CTRL_GET_SIGNATURE_NID = 132
_SSL_CTRL_GET_PEER_SIGNATURE_NID = 108
_SSL_CTRL_GET_NEGOTIATED_GROUP = 134


def _details(lib: OpenSsl, ptr: int) -> str:
    """` key-exchange X25519 server-signature ... server-digest SHA256[ client-...]`."""
    out = ""
    group = lib.sn(lib.ctrl(ptr, _SSL_CTRL_GET_NEGOTIATED_GROUP, 0, None))
    if group:
        out += f" key-exchange {group}" if group in _X_GROUPS else \
            f" key-exchange ECDHE ({group})"
    out += _signature(lib, ptr, "server", lib.sig_type, lib.certificate,
                      _SSL_CTRL_GET_SIGNATURE_NID)
    if lib.peer_certificate is not None:  # a client certificate was presented
        out += _signature(lib, ptr, "client", lib.peer_sig_type, lib.peer_certificate,
                          _SSL_CTRL_GET_PEER_SIGNATURE_NID)
    return out


def _signature(lib: OpenSsl, ptr: int, side: str, sig_type: Any, certificate: Any,
               digest_ctrl: int) -> str:
    """` server-signature RSA-PSS (2048 bits) server-digest SHA256` (or client-)."""
    nid = ctypes.c_int(0)
    if not sig_type(ptr, ctypes.byref(nid)) or not nid.value:
        return ""
    signature = _SIGNATURES.get(lib.sn(nid.value), lib.sn(nid.value))
    out = f" {side}-signature {signature}"
    cert = certificate(ptr)
    key = lib.pubkey(cert) if cert else None
    if key:
        if signature == "ECDSA" and lib.group_name is not None:
            buf = ctypes.create_string_buffer(80)
            size = ctypes.c_size_t(0)
            if lib.group_name(key, buf, 80, ctypes.byref(size)):
                out += f" ({buf.value.decode()})"
        elif signature not in ("ED25519", "ED448"):
            out += f" ({lib.key_bits(key)} bits)"
    digest = ctypes.c_int(0)
    if lib.ctrl(ptr, digest_ctrl, 0, ctypes.byref(digest)) and digest.value:
        out += f" {side}-digest {lib.sn(digest.value)}"
    return out


# OpenSSL 3 packed error codes (ERR_PACK(ERR_LIB_SSL, reason)) of the handshake failures a
# client causes, for Postfix's `TLS library problem` line (Python keeps only the names).
_SSL_REASONS = {"WRONG_VERSION_NUMBER": 0x10B, "HTTP_REQUEST": 0x9C, "HTTPS_PROXY_REQUEST": 0x9B,
                "UNSUPPORTED_PROTOCOL": 0x102, "NO_SHARED_CIPHER": 0xC1,
                "NO_PROTOCOLS_AVAILABLE": 0xBF, "UNEXPECTED_MESSAGE": 0xF4,
                "RECORD_LENGTH_MISMATCH": 0xD5, "PACKET_LENGTH_TOO_LONG": 0xC6,
                "UNKNOWN_PROTOCOL": 0xFC, "VERSION_TOO_LOW": 0x18C,
                "TLSV1_ALERT_PROTOCOL_VERSION": 0x46C, "SSLV3_ALERT_BAD_CERTIFICATE": 0x412,
                "TLSV1_ALERT_UNKNOWN_CA": 0x418, "TLSV1_ALERT_DECODE_ERROR": 0x41A,
                "SSLV3_ALERT_HANDSHAKE_FAILURE": 0x410}


def library_problem(exc: ssl.SSLError) -> str:
    """Postfix's `TLS library problem: error:0A00010B:SSL routines::wrong version number:`
    (without OpenSSL's source file and line, which Python does not keep)."""
    reason = getattr(exc, "reason", None) or ""
    text = reason.lower().replace("_", " ")
    code = _SSL_REASONS.get(reason)
    if code is None:
        return f"TLS library problem: {exc}"
    return f"TLS library problem: error:{(20 << 23) | code:08X}:SSL routines::{text}:"
