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
import hashlib
import ssl
from typing import Any

from mailgate.engine.context import ClientCert
from mailgate.server.openssl import openssl

SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
NID_COMMON_NAME = 13
NID_ORGANIZATION = 17
def ask_client_certificates(ctx: ssl.SSLContext, required: bool) -> None:
    """smtpd_tls_ask_ccert: request a certificate and accept any (`required`:
    smtpd_tls_req_ccert, a client without one fails the handshake). ValueError when this
    Python's ssl cannot be reached through ctypes."""
    ctx.verify_mode = ssl.CERT_OPTIONAL
    lib = openssl()
    mode = SSL_VERIFY_PEER | (SSL_VERIFY_FAIL_IF_NO_PEER_CERT if required else 0)
    lib.set_verify(lib.ctx_pointer(ctx), mode, lib.accept_all)


def _fingerprint(data: bytes, digest: str) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.new(digest, data).digest())


def client_cert(ssl_object: Any, ssl_pointer: int | None, digest: str) -> ClientCert | None:
    """The certificate the client presented in this session, or None."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    lib = openssl()
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
