"""A client session presented as another address through XCLIENT, as a proxy would."""

from __future__ import annotations

import smtplib

MESSAGE = "Subject: hello\r\n\r\nhello\r\n"


def session(port: int, addr: str, recipients: list[str], deliver: bool = False
            ) -> list[int] | str:
    """One client named ADDR by XCLIENT trying `recipients` at example.test: the RCPT codes,
    or the refusal it got instead; with `deliver`, the message goes when one was accepted."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        code, text = smtp.docmd("XCLIENT", f"ADDR={addr} NAME=unknown")
        if code != 220:
            return f"{code} {text.decode()}"
        smtp.ehlo("client.example")
        smtp.mail("someone@client.example")
        codes = [smtp.rcpt(f"{user}@example.test")[0] for user in recipients]
        if deliver and 250 in codes:
            assert smtp.data(MESSAGE)[0] == 250
        return codes
