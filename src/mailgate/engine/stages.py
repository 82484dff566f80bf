"""The stage table: what each SMTP protocol state checks, and how its replies name it."""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.engine.reply import RECIPIENT, SENDER


@dataclass(frozen=True, slots=True)
class Stage:
    """One smtpd_check_* stage: its restriction list, the class its replies name, the
    check_*_access a bare `type:table` means (None: not allowed), and what the reply names
    (`subject`: client, helo, sender, recipient, etrn, or the command itself)."""

    list: str
    cls: str
    acl: str | None
    subject: str


CLIENT = Stage("client", "Client host", "check_client_access", "client")
HELO = Stage("helo", "Helo command", "check_helo_access", "helo")
MAIL = Stage("sender", SENDER, "check_sender_access", "sender")
RCPT = Stage("recipient", RECIPIENT, "check_recipient_access", "recipient")
ETRN = Stage("etrn", "Etrn command", "check_etrn_access", "etrn")
DATA = Stage("data", "Data command", None, "DATA")
EOD = Stage("eod", "End-of-data", None, "END-OF-MESSAGE")

# By Postfix's protocol_state names (what a policy request says).
STAGES: dict[str, Stage] = {
    "CONNECT": CLIENT, "HELO": HELO, "EHLO": HELO, "MAIL": MAIL, "RCPT": RCPT, "VRFY": RCPT,
    "ETRN": ETRN, "DATA": DATA, "BDAT": DATA, "END-OF-MESSAGE": EOD,
}
