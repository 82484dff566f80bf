"""check_policy_service: ask a policy server (Postfix SMTPD_POLICY_README) and treat its
`action` as an access(5) result; a failed service gives the default action."""

from __future__ import annotations

import time

from mailgate.engine.access import table_result
from mailgate.engine.context import CheckState
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.reply import Status
from mailgate.policy.service import NAME

DEFAULT_ACTION = "451 4.3.5 Server configuration problem"  # for a nested default action


def request(st: CheckState, context: str, helo: str | None = None, sender: str | None = None,
            recipient: str | None = None, etrn_domain: str | None = None) -> dict[str, str]:
    """The attributes Postfix 3.7's smtpd sends, in its order ; the
    HELO name, sender, recipient and ETRN domain are the ones being checked."""
    client, tls, cert = st.client, st.encryption, st.ccert
    where = "DATA" if st.where == "BDAT" else st.where
    data_stage = where in ("DATA", "END-OF-MESSAGE")
    return {
        "request": "smtpd_access_policy",
        "protocol_state": where,
        "protocol_name": st.protocol,
        "client_address": client.addr,
        "client_name": client.name,
        "client_port": str(client.port),
        "reverse_client_name": client.reverse_name,
        "server_address": client.server_addr,
        "server_port": str(client.server_port) if client.server_port else "",
        "helo_name": helo or "",
        "sender": sender or "",
        "recipient": recipient or "",  # DATA, END-OF-MESSAGE: the only one, if one
        "recipient_count": str(st.rcpt_count if data_stage else 0),
        "queue_id": st.queue_id or "",
        "instance": st.instance,
        "size": str(st.size),
        "etrn_domain": etrn_domain or "",
        "stress": "",
        "sasl_method": st.sasl_method or "",
        "sasl_username": st.sasl_username or "",
        "sasl_sender": st.sasl_sender or "",
        "ccert_subject": cert.subject if cert and cert.trusted else "",
        "ccert_issuer": cert.issuer if cert and cert.trusted else "",
        "ccert_fingerprint": cert.fingerprint if cert else "",
        "ccert_pubkey_fingerprint": cert.pkey_fingerprint if cert else "",
        "encryption_protocol": tls[0] if tls else "",
        "encryption_cipher": tls[1] if tls else "",
        "encryption_keysize": str(tls[2]) if tls else "0",
        "policy_context": context,
    }


@restriction(NAME)
async def check_policy_service(ev: Evaluation, frame: Frame, args: Args) -> Status:
    server = args.peek()
    if server is None or ":" not in server:
        ev.warn(f"restriction {NAME} must be followed by transport:server")
        ev.server_error()
    args.take()
    client = ev.tables.policy.get(server)
    if client is None:  # registered at start-up from every list; a class made later is not
        ev.warn(f"no policy client for server {server}")
        ev.server_error()
    started = time.monotonic()
    raw = await client.request(request(ev.st, client.s.policy_context, ev.helo, ev.sender,
                                       ev.recipient, ev.etrn_domain), ev.warn,
                               ev.st.policy_pinned)
    ev.tables.metrics.policy(server, "error" if raw is None else "ok",
                             time.monotonic() - started)
    action: str | None = None
    if raw is not None:
        try:
            action = raw.decode("utf-8")
        except UnicodeDecodeError:
            action = None
            if ev.settings.smtputf8_enable:
                ev.warn(f"malformed UTF-8 in policy server {server} response: "
                        f"\"{raw.decode('utf-8', 'replace')}\"")
            else:
                action = raw.decode("latin-1")
    if action is not None:
        return await table_result(ev, server, action, "policy query", frame)
    ev.policy_nesting += 1  # a default action that asks the same failed service again
    try:
        default = client.s.default_action if ev.policy_nesting == 1 else DEFAULT_ACTION
        return await table_result(ev, server, default, "policy query", frame)
    finally:
        ev.policy_nesting -= 1
