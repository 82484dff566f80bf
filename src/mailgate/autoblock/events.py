"""The bad events automatic blocks count, recognized by the reply smtpd gives the client."""

from __future__ import annotations

UNKNOWN_RECIPIENT = "unknown_recipient"
RELAY_DENIED = "relay_denied"
AUTH_FAILED = "auth_failed"
PROTOCOL_ERROR = "protocol_error"
HARD_LIMIT = "hard_limit"
EVENTS = (UNKNOWN_RECIPIENT, RELAY_DENIED, AUTH_FAILED, PROTOCOL_ERROR, HARD_LIMIT)

_NON_SMTP = "Error: I can break rules, too. Goodbye."  # smtpd's answer to HTTP and the like


def classify(code: int, line: str) -> str | None:
    """The bad event that a reply reports, or None. `line` is the reply after its code:
    the enhanced status code and the text (`5.1.1 <a@b>: Recipient address rejected: ...`).
    Replies softened by soft_bounce (4xx) count as their 5xx form would.

    - unknown_recipient: X.1.1 (`User unknown in ... table`, RCPT and VRFY)
    - relay_denied: `... Relay access denied` (reject_ or defer_unauth_destination)
    - auth_failed: `535 5.7.8 Error: authentication failed: ...`
    - protocol_error: 500 and 501 X.5.x (unknown command, bad syntax), `554 5.5.0` (SMTP
      protocol synchronization), a bare <LF> refused, a non-SMTP command (HTTP and such)
    - hard_limit: `421 4.7.0 HOST Error: too many errors` (smtpd_hard_error_limit)

    Sequence errors that follow an earlier refusal in a pipelined group (`503 5.5.1 need
    MAIL command`, `554 5.5.1 no valid recipients`) are not counted: the refusal was."""
    if code < 400:
        return PROTOCOL_ERROR if code == 221 and line.endswith(_NON_SMTP) else None
    detail = line[1:5]  # ".1.1" of "5.1.1 ..."
    if detail == ".1.1" and line[5:6] == " ":
        return UNKNOWN_RECIPIENT
    if line.endswith("Relay access denied"):
        return RELAY_DENIED
    kind = code % 100
    if kind == 35:
        return AUTH_FAILED
    if code == 421:
        return HARD_LIMIT if line.endswith("Error: too many errors") else None
    if (kind <= 1 and detail[:2] == ".5") or (kind == 54 and detail == ".5.0"):
        return PROTOCOL_ERROR
    return PROTOCOL_ERROR if line.endswith("Error: bare <LF> received") else None
