"""TLS client certificates as Postfix's smtpd sees them: asked for, never refused, then described.

Postfix asks for a client certificate (smtpd_tls_ask_ccert) and completes the handshake
whatever the client sends: an untrusted certificate is still identified by its fingerprints
(permit_tls_clientcerts, check_ccert_access); only permit_tls_all_clientcerts and the subject
and issuer in policy requests need it to be verified. Python's `ssl` would fail the handshake
for a certificate that does not verify, so the context gets, through `ctypes`, a verify
callback that accepts every certificate; whether it verified is read after the handshake
(SSL_get_verify_result), as Postfix does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import ssl
from typing import Any

from mailgate.engine.context import ClientCert

SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
NID_COMMON_NAME = 13
NID_ORGANIZATION = 17
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept_all(preverify_ok: int, store: object) -> int:
    return 1  # the verdict is read after the handshake (SSL_get_verify_result)


class _Lib:
    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("ssl") or "libssl.so.3")
        crypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        self.set_verify = lib.SSL_CTX_set_verify
        self.set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
        self.get_verify_mode = lib.SSL_CTX_get_verify_mode
        self.get_verify_mode.argtypes = [ctypes.c_void_p]
        self.verify_result = lib.SSL_get_verify_result
        self.verify_result.restype = ctypes.c_long
        self.verify_result.argtypes = [ctypes.c_void_p]
        self.d2i_x509 = crypto.d2i_X509
        self.d2i_x509.restype = ctypes.c_void_p
        self.d2i_x509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                  ctypes.c_long]
        self.x509_free = crypto.X509_free
        self.x509_free.argtypes = [ctypes.c_void_p]
        self.subject = crypto.X509_get_subject_name
        self.subject.restype = ctypes.c_void_p
        self.subject.argtypes = [ctypes.c_void_p]
        self.issuer = crypto.X509_get_issuer_name
        self.issuer.restype = ctypes.c_void_p
        self.issuer.argtypes = [ctypes.c_void_p]
        self.text_by_nid = crypto.X509_NAME_get_text_by_NID
        self.text_by_nid.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_int]
        self.pubkey = crypto.X509_get0_pubkey
        self.pubkey.restype = ctypes.c_void_p
        self.pubkey.argtypes = [ctypes.c_void_p]
        self.i2d_pubkey = crypto.i2d_PUBKEY
        self.i2d_pubkey.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
        self.callback = _VERIFY_CB(_accept_all)  # kept alive as long as the process

    def name_text(self, name: int, nid: int) -> str:
        buf = ctypes.create_string_buffer(256)
        size = self.text_by_nid(name, nid, buf, 256)
        return buf.raw[:size].decode("utf-8", "replace") if size > 0 else ""


_LOADED: list[_Lib] = []


def _lib() -> _Lib:
    if not _LOADED:
        _LOADED.append(_Lib())
    return _LOADED[0]


def _ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The SSL_CTX* inside CPython's _ssl._SSLContext (right after PyObject_HEAD), trusted
    only if OpenSSL reports the verify mode `ssl` has just set."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p))
    if not pointer.value or _lib().get_verify_mode(pointer.value) != SSL_VERIFY_PEER:
        raise ValueError("not an SSL_CTX")
    return pointer.value


def ask_client_certificates(ctx: ssl.SSLContext, required: bool) -> None:
    """smtpd_tls_ask_ccert: request a certificate and accept any (`required`:
    smtpd_tls_req_ccert, a client without one fails the handshake). ValueError when this
    Python's ssl cannot be reached through ctypes."""
    ctx.verify_mode = ssl.CERT_OPTIONAL
    lib = _lib()
    mode = SSL_VERIFY_PEER | (SSL_VERIFY_FAIL_IF_NO_PEER_CERT if required else 0)
    lib.set_verify(_ctx_pointer(ctx), mode, lib.callback)


def _fingerprint(data: bytes, digest: str) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.new(digest, data).digest())


def client_cert(ssl_object: Any, ssl_pointer: int | None, digest: str) -> ClientCert | None:
    """The certificate the client presented in this session, or None."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    lib = _lib()
    buf = ctypes.c_char_p(der)
    x509 = lib.d2i_x509(None, ctypes.byref(buf), len(der))
    if not x509:
        return ClientCert("", "", _fingerprint(der, digest), "", False)
    try:
        subject = lib.name_text(lib.subject(x509), NID_COMMON_NAME)
        issuer_name = lib.issuer(x509)
        issuer = (lib.name_text(issuer_name, NID_COMMON_NAME)
                  or lib.name_text(issuer_name, NID_ORGANIZATION))
        key = lib.pubkey(x509)
        spki = b""
        if key:
            size = lib.i2d_pubkey(key, None)
            if size > 0:
                out = ctypes.create_string_buffer(size)
                cursor = ctypes.cast(out, ctypes.c_char_p)
                lib.i2d_pubkey(key, ctypes.byref(cursor))
                spki = out.raw[:size]
    finally:
        lib.x509_free(x509)
    trusted = ssl_pointer is not None and lib.verify_result(ssl_pointer) == 0
    return ClientCert(subject, issuer, _fingerprint(der, digest),
                      _fingerprint(spki, digest) if spki else "", trusted)
