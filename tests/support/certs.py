"""A certificate authority made by the tests (openssl CLI): RSA and ECDSA server certificates, a
client certificate it signed and a self-signed one (for smtpd_tls_ask_ccert)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    ca: Path
    rsa_cert: Path
    rsa_key: Path
    ec_cert: Path
    ec_key: Path
    client_cert: Path
    client_key: Path
    self_cert: Path
    self_key: Path

    def fingerprint(self, cert: Path, digest: str = "sha256") -> str:
        """`AB:CD:...` of the certificate (Postfix's smtpd_tls_fingerprint_digest form)."""
        out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
                              f"-{digest}"], check=True, capture_output=True, text=True,
                             timeout=60).stdout
        return out.strip().split("=", 1)[1]


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, timeout=60, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make(directory: Path, hostname: str) -> Certs:
    """A CA and two server certificates for `hostname`, readable by every user (the
    reference Postfix reads them as root, its smtpd as postfix)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    d = directory
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
         "-out", str(d / "ca.crt"), "-days", "30", "-subj", "/CN=mailgate test CA")
    for kind, newkey in (("rsa", ["-newkey", "rsa:2048"]),
                         ("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])):
        _run("req", *newkey, "-nodes", "-keyout", str(d / f"{kind}.key"), "-out",
             str(d / f"{kind}.csr"), "-subj", f"/CN={hostname}")
        _run("x509", "-req", "-in", str(d / f"{kind}.csr"), "-CA", str(d / "ca.crt"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / f"{kind}.crt"),
             "-days", "30")
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "client.key"), "-out",
         str(d / "client.csr"), "-subj", "/CN=client.example/O=Client Org")
    _run("x509", "-req", "-in", str(d / "client.csr"), "-CA", str(d / "ca.crt"),
         "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "client.crt"),
         "-days", "30")
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "self.key"),
         "-out", str(d / "self.crt"), "-days", "30", "-subj", "/CN=self.example")
    for path in d.iterdir():
        path.chmod(0o644)
    return Certs(d / "ca.crt", d / "rsa.crt", d / "rsa.key", d / "ec.crt", d / "ec.key",
                 d / "client.crt", d / "client.key", d / "self.crt", d / "self.key")
