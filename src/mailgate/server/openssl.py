"""The libssl/libcrypto calls Python's `ssl` does not offer, reached once through `ctypes`.

What Postfix logs and checks of a TLS session (key exchange, signatures, the client
certificate and whether it verified) and two context settings (a verify callback that
accepts any client certificate, shared session-ticket keys) need OpenSSL itself. The SSL and
SSL_CTX pointers are read from CPython's objects and trusted only when OpenSSL, asked about
them, agrees with what `ssl` says; every caller falls back (or refuses to start) when not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
from typing import Any

TLS_VERSION_CODES = {"TLSv1": 0x301, "TLSv1.1": 0x302, "TLSv1.2": 0x303, "TLSv1.3": 0x304}
VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long


def _fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    """One C function with its types, or None when this OpenSSL lacks it."""
    function = getattr(lib, name, None)
    if function is not None:
        function.restype, function.argtypes = restype, list(argtypes)
    return function


def _accept_all(preverify_ok: int, store: object) -> int:
    return 1  # the verdict is read after the handshake (SSL_get_verify_result)


class OpenSsl:
    """The functions, loaded once per process (on the first use)."""

    def __init__(self) -> None:
        s = ctypes.CDLL(ctypes.util.find_library("ssl") or "libssl.so.3")
        c = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        intp, charpp = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_char_p)
        self.ctrl = _fn(s, "SSL_ctrl", _L, _P, _I, _L, _P)
        self.version = _fn(s, "SSL_version", _I, _P)
        self.sig_type = _fn(s, "SSL_get_signature_type_nid", _I, _P, intp)
        self.peer_sig_type = _fn(s, "SSL_get_peer_signature_type_nid", _I, _P, intp)
        self.certificate = _fn(s, "SSL_get_certificate", _P, _P)
        self.peer_certificate = _fn(s, "SSL_get0_peer_certificate", _P, _P)
        self.verify_result = _fn(s, "SSL_get_verify_result", _L, _P)
        self.ctx_ctrl = _fn(s, "SSL_CTX_ctrl", _L, _P, _I, _L, ctypes.c_char_p)
        self.ctx_options = _fn(s, "SSL_CTX_get_options", ctypes.c_uint64, _P)
        self.set_verify = _fn(s, "SSL_CTX_set_verify", None, _P, _I, VERIFY_CB)
        self.pubkey = _fn(c, "X509_get0_pubkey", _P, _P)
        self.key_bits = _fn(c, "EVP_PKEY_get_bits", _I, _P) or _fn(c, "EVP_PKEY_bits", _I, _P)
        self.group_name = _fn(c, "EVP_PKEY_get_group_name", _I, _P, ctypes.c_char_p,
                              ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))
        self.nid2sn = _fn(c, "OBJ_nid2sn", ctypes.c_char_p, _I)
        self.d2i_x509 = _fn(c, "d2i_X509", _P, _P, charpp, _L)
        self.x509_free = _fn(c, "X509_free", None, _P)
        self.subject = _fn(c, "X509_get_subject_name", _P, _P)
        self.issuer = _fn(c, "X509_get_issuer_name", _P, _P)
        self.text_by_nid = _fn(c, "X509_NAME_get_text_by_NID", _I, _P, _I, ctypes.c_char_p, _I)
        self.i2d_pubkey = _fn(c, "i2d_PUBKEY", _I, _P, charpp)
        self.accept_all = VERIFY_CB(_accept_all)  # kept alive as long as the process

    def ssl_pointer(self, ssl_object: Any, version: str) -> int:
        """The SSL* inside CPython's _ssl._SSLSocket (after PyObject_HEAD and one pointer),
        trusted only if OpenSSL reports the same protocol version as `ssl` did."""
        inner = getattr(ssl_object, "_sslobj", ssl_object)
        pointer = ctypes.c_void_p.from_address(id(inner) + 3 * ctypes.sizeof(ctypes.c_void_p))
        if not pointer.value or self.version(pointer.value) != TLS_VERSION_CODES.get(version):
            raise ValueError("not an SSL object")
        return pointer.value

    def ctx_pointer(self, ctx: ssl.SSLContext) -> int:
        """The SSL_CTX* inside CPython's _ssl._SSLContext (right after PyObject_HEAD),
        trusted only if OpenSSL reports the options `ssl` has."""
        pointer = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p))
        if not pointer.value or self.ctx_options(pointer.value) != int(ctx.options):
            raise ValueError("not an SSL_CTX")
        return pointer.value

    def sn(self, nid: int) -> str:
        name = self.nid2sn(nid)
        return name.decode() if name else ""

    def name_text(self, name: int, nid: int) -> str:
        buf = ctypes.create_string_buffer(256)
        size = self.text_by_nid(name, nid, buf, 256)
        return buf.raw[:size].decode("utf-8", "replace") if size > 0 else ""


_LOADED: list[OpenSsl] = []


def openssl() -> OpenSsl:
    """The process's OpenSsl (OSError/AttributeError when the libraries cannot be used)."""
    if not _LOADED:
        _LOADED.append(OpenSsl())
    return _LOADED[0]
