"""Delivery status notifications (RFC 3464) in Postfix's bounce(8) format: the notice, the
per-recipient report, and the returned message (its headers only when it is large)."""

from __future__ import annotations

import email.utils
import os
import textwrap
from dataclasses import dataclass

from mailgate.queue.store import Envelope

BODY = """\
This is the mail system at host {myhostname}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system"""
DELAY_BODY = """\
This is the mail system at host {myhostname}.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than {hours} hour(s).
It will be retried until it is {days} day(s) old.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system"""
RETURN_LIMIT = 50000  # bounce_size_limit: larger messages come back as headers only


@dataclass(frozen=True, slots=True)
class Failed:
    recipient: str
    orcpt: str
    dsn: str
    reason: str


def notification(envelope: Envelope, content: bytes, failed: list[Failed], myhostname: str,
                 mail_name: str, to: str, now: float, postmaster_copy: bool = False,
                 delay: tuple[int, int] | None = None) -> bytes:
    """The DSN message text (LF line ends, as queue files hold them); `delay` = (hours,
    days) makes it Postfix's delayed-mail warning instead of a bounce."""
    boundary = f"{envelope.queue_id}.{int(now)}/{myhostname}"
    date = email.utils.formatdate(now, localtime=True)
    lines = [
        f"Date: {date}",
        f"From: MAILER-DAEMON@{myhostname} (Mail Delivery System)",
        "Subject: " + ("Delayed Mail (still being retried)" if delay else
                       "Postmaster Copy: Undelivered Mail" if postmaster_copy
                       else "Undelivered Mail Returned to Sender"),
        f"To: {to}",
        f"Message-Id: <{int(now)}.{os.getpid()}.{envelope.queue_id}@{myhostname}>",
    ]
    if envelope.message_id:
        lines += [f"References: {envelope.message_id}", f"In-Reply-To: {envelope.message_id}"]
    lines += [
        "Auto-Submitted: " + ("auto-generated" if postmaster_copy else "auto-replied"),
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 7bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        DELAY_BODY.format(myhostname=myhostname, hours=delay[0], days=delay[1]) if delay
        else BODY.format(myhostname=myhostname),
    ]
    for item in failed:
        lines.append("")
        wrapped = textwrap.wrap(f"<{item.recipient}>: {item.reason}", 78,
                                subsequent_indent="    ", break_long_words=False,
                                break_on_hyphens=False)
        lines += wrapped or [f"<{item.recipient}>:"]
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {myhostname}",
        f"X-{mail_name.capitalize()}-Queue-ID: {envelope.queue_id}",
    ]
    if envelope.sender:
        lines.append(f"X-{mail_name.capitalize()}-Sender: rfc822; {envelope.sender}")
    lines.append(f"Arrival-Date: {email.utils.formatdate(envelope.arrival, localtime=True)}")
    for item in failed:
        lines += ["", f"Final-Recipient: rfc822; {item.recipient}"]
        if item.orcpt:
            lines.append(f"Original-Recipient: {item.orcpt}")
        lines += [f"Action: {'delayed' if delay else 'failed'}", f"Status: {item.dsn}"]
        said = _remote(item.reason)
        if said is not None:
            lines += [f"Remote-MTA: dns; {said[0]}", f"Diagnostic-Code: smtp; {said[1]}"]
        else:
            lines.append(f"Diagnostic-Code: X-{mail_name.capitalize()}; {item.reason}")
    headers_only = len(content) > RETURN_LIMIT
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: " + ("Undelivered Message Headers" if headers_only
                                   else "Undelivered Message"),
        "Content-Type: " + ("text/rfc822-headers" if headers_only else "message/rfc822"),
        "Content-Transfer-Encoding: 7bit",
        "",
        f"Return-Path: <{envelope.sender}>",
    ]
    text = content.replace(b"\r\n", b"\n")
    if headers_only:
        text = text.split(b"\n\n", 1)[0] + b"\n"
    out = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape") + text
    if not out.endswith(b"\n"):
        out += b"\n"
    return out + f"\n--{boundary}--\n".encode()


def _remote(reason: str) -> tuple[str, str] | None:
    """`host mx[addr] said: 550 … (in reply to RCPT TO command)` → (mx, "550 …")."""
    if not reason.startswith("host ") or " said: " not in reason:
        return None
    host, _, said = reason[5:].partition(" said: ")
    said = said.rsplit(" (in reply to ", 1)[0]
    return host.split("[", 1)[0], said
