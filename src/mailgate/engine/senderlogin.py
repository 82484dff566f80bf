"""Who may use which sender: smtpd_sender_login_maps and the reject_*sender_login_mismatch family
(smtpd_check.c reject_auth_sender and reject_unauth_sender)."""

from __future__ import annotations

import re

from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.recipients import address_lookup
from mailgate.engine.reply import Status

_OWNER_SEPARATORS = re.compile(r"[,\s]+")  # CHARS_COMMA_SP


def _owners(ev: Evaluation, sender: str) -> str | None:
    """The owners smtpd_sender_login_maps lists for the sender (mail_addr_find() on its
    resolved form); a failed lookup ends the check with a 451."""
    table = ev.tables.sender_login_maps
    if table is None:
        return None
    return address_lookup(ev, table, ev.resolve(sender), sender)


def _not_owned(ev: Evaluation, sender: str, allow_unknown: bool) -> Status:
    """A logged-in client whose login is not an owner of the sender (`allow_unknown`: a
    sender without owners passes)."""
    user = ev.st.sasl_username
    if user is None or ev.tables.sender_login_maps is None:
        return Status.DUNNO
    owners = _owners(ev, sender)
    if owners is None:
        if allow_unknown:
            return Status.DUNNO
    elif any(user.casefold() == name.casefold()
             for name in _OWNER_SEPARATORS.split(owners) if name):
        return Status.DUNNO
    return ev.reject(553, "5.7.1", f"<{sender}>: Sender address rejected: not owned by user "
                     f"{user}")


def _not_logged_in(ev: Evaluation, sender: str) -> Status:
    """A client that did not log in, using a sender that has owners."""
    if ev.st.sasl_username is not None or ev.tables.sender_login_maps is None:
        return Status.DUNNO
    if _owners(ev, sender) is None:
        return Status.DUNNO
    return ev.reject(553, "5.7.1", f"<{sender}>: Sender address rejected: not logged in")


def _either(ev: Evaluation, allow_unknown: bool) -> Status:
    """Logged in and not an owner, or not logged in and the sender has owners."""
    sender = ev.sender
    if not sender:
        return Status.DUNNO
    status = _not_owned(ev, sender, allow_unknown)
    return status if status is Status.REJECT else _not_logged_in(ev, sender)


@restriction("reject_sender_login_mismatch")
def reject_sender_login_mismatch(ev: Evaluation, frame: Frame, args: Args) -> Status:
    return _either(ev, allow_unknown=False)


@restriction("reject_known_sender_login_mismatch")
def reject_known_sender_login_mismatch(ev: Evaluation, frame: Frame, args: Args) -> Status:
    return _either(ev, allow_unknown=True)


@restriction("reject_authenticated_sender_login_mismatch")
def reject_authenticated_sender_login_mismatch(ev: Evaluation, frame: Frame,
                                               args: Args) -> Status:
    sender = ev.sender
    return _not_owned(ev, sender, allow_unknown=False) if sender else Status.DUNNO


@restriction("reject_unauthenticated_sender_login_mismatch")
def reject_unauthenticated_sender_login_mismatch(ev: Evaluation, frame: Frame,
                                                 args: Args) -> Status:
    sender = ev.sender
    return _not_logged_in(ev, sender) if sender else Status.DUNNO
