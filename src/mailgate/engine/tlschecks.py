"""Restrictions on the TLS client certificate: permit_tls_clientcerts, permit_tls_all_clientcerts
and check_ccert_access (smtpd_check.c permit_tls_clientcerts and check_ccert_access)."""

from __future__ import annotations

from mailgate.engine.access import found_result, table_argument
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.reply import Status
from mailgate.errors import MapError


def _listed(ev: Evaluation, frame: Frame) -> Status:
    """The certificate's fingerprint, then its public key's, in relay_clientcerts; an
    untrusted certificate counts (the fingerprint is what identifies it)."""
    cert, table = ev.st.ccert, ev.tables.relay_clientcerts
    if cert is None or table is None:
        return Status.DUNNO
    for key in (cert.fingerprint, cert.pkey_fingerprint):
        try:
            found = table.lookup(key) is not None
        except MapError:
            ev.warn(f'{table.spec} lookup error for "{key}"')
            ev.warn(f"relay_clientcerts: lookup error for fingerprint '{cert.fingerprint}', "
                    f"pkey fingerprint {cert.pkey_fingerprint}")
            ev.dict_retry(frame.name)
        if found:
            return Status.OK
    return Status.DUNNO


def _client(ev: Evaluation) -> Frame:
    return Frame(ev.st.namaddr, "Client host", None)


@restriction("permit_tls_clientcerts")
def permit_tls_clientcerts(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """A client certificate whose fingerprint relay_clientcerts lists."""
    if _listed(ev, frame) is Status.OK:
        return ev.permit("permit_tls_clientcerts", _client(ev))
    return Status.DUNNO


@restriction("permit_tls_all_clientcerts")
def permit_tls_all_clientcerts(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """Any client certificate that verified (or, like permit_tls_clientcerts, is listed)."""
    cert = ev.st.ccert
    if (cert is not None and cert.trusted) or _listed(ev, frame) is Status.OK:
        return ev.permit("permit_tls_all_clientcerts", _client(ev))
    return Status.DUNNO


@restriction("check_ccert_access")
async def check_ccert_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """An access table looked up with the certificate's fingerprint, then its public key's;
    replies name the certificate's CN (`Client certificate`)."""
    spec, table = table_argument(ev, args, "check_ccert_access")
    cert = ev.st.ccert
    if cert is None:
        return Status.DUNNO
    where = Frame(cert.subject, "Client certificate", frame.acl)
    for key in (cert.fingerprint, cert.pkey_fingerprint):
        if not key:
            continue
        status, found = await found_result(ev, spec, table, iter([(key, False)]), key, where)
        if found:
            return status
    return Status.DUNNO
