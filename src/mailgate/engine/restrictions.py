"""Generic restrictions: permit/reject/defer, the defer_if_* pair, sleep, pipelining, client
network checks and the multi-recipient-bounce rule (one small function per Postfix name)."""

from __future__ import annotations

from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.reply import Status
from mailgate.errors import MapError


@restriction("permit")
def permit(ev: Evaluation, frame: Frame, args: Args) -> Status:
    nxt = args.peek()
    if nxt is not None and not nxt.startswith("."):
        ev.warn(f"restriction `{nxt}' after `permit' is ignored")
    return ev.permit("permit", frame)


@restriction("reject")
def reject(ev: Evaluation, frame: Frame, args: Args) -> Status:
    status = ev.reject(ev.settings.code("reject_code"), "5.7.1",
                       f"<{frame.name}>: {frame.cls} rejected: Access denied")
    if args.peek() is not None and not ev.warn_if_reject:
        ev.warn(f"restriction `{args.peek()}' after `reject' is ignored")
    return status


@restriction("defer")
def defer(ev: Evaluation, frame: Frame, args: Args) -> Status:
    status = ev.reject(ev.settings.code("defer_code"), "4.3.2",
                       f"<{frame.name}>: {frame.cls} rejected: Try again later")
    if args.peek() is not None and not ev.warn_if_reject:
        ev.warn(f"restriction `{args.peek()}' after `defer' is ignored")
    return status


@restriction("defer_if_permit")
def defer_if_permit(ev: Evaluation, frame: Frame, args: Args) -> Status:
    return ev.defer_if_permit(450, "4.7.0",
                              f"<{frame.name}>: {frame.cls} rejected: defer_if_permit requested")


@restriction("defer_if_reject")
def defer_if_reject(ev: Evaluation, frame: Frame, args: Args) -> Status:
    return ev.defer_if_reject(450, "4.7.0",
                              f"<{frame.name}>: {frame.cls} rejected: defer_if_reject requested")


@restriction("sleep")
def sleep(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """`sleep N`: the session waits N seconds before its reply (a timer, not a blocked
    process); evaluation continues."""
    value = args.peek()
    if value is None or not value.isdigit():
        ev.warn("restriction sleep must be followed by number")
        ev.server_error()
    args.take()
    ev.sleep += int(value)
    return Status.DUNNO


@restriction("reject_unauth_pipelining")
def reject_unauth_pipelining(ev: Evaluation, frame: Frame, args: Args) -> Status:
    if ev.st.ill_pipelining:
        return ev.reject(503, "5.5.0", f"<{frame.name}>: {frame.cls} rejected: "
                         "Improper use of SMTP command pipelining", hard=False)
    return Status.DUNNO


@restriction("permit_mynetworks")
def permit_mynetworks(ev: Evaluation, frame: Frame, args: Args) -> Status:
    client = ev.st.client
    try:
        hit = ev.tables.mynetworks.match(client.name, client.addr)
    except MapError:
        ev.dict_retry(frame.name)
    if not hit:
        return Status.DUNNO
    return ev.permit("permit_mynetworks", Frame(ev.st.namaddr, "Client host", None))


@restriction("permit_inet_interfaces")
def permit_inet_interfaces(ev: Evaluation, frame: Frame, args: Args) -> Status:
    if ev.st.client.peer in ev.tables.inet_interfaces:  # the socket's peer, as Postfix
        return ev.permit("permit_inet_interfaces", Frame(ev.st.namaddr, "Client host", None))
    return Status.DUNNO


@restriction("permit_sasl_authenticated")
def permit_sasl_authenticated(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """A client that logged in with SMTP AUTH (any mechanism but ANONYMOUS)."""
    method = ev.st.sasl_method
    if method is None or method.lower() == "anonymous":
        return Status.DUNNO
    return ev.permit("permit_sasl_authenticated", Frame(ev.st.namaddr, "Client host", None))


@restriction("reject_plaintext_session")
def reject_plaintext_session(ev: Evaluation, frame: Frame, args: Args) -> Status:
    if ev.st.encryption is not None:
        return Status.DUNNO
    return ev.reject(ev.settings.code("plaintext_reject_code"), "4.7.1",
                     "Session encryption is required")


@restriction("reject_multi_recipient_bounce")
def reject_multi_recipient_bounce(ev: Evaluation, frame: Frame, args: Args) -> Status:
    st = ev.st
    if ev.sender == "" and st.rcpt_count > (0 if st.where == "RCPT" else 1):
        return ev.reject(ev.settings.code("multi_recipient_bounce_reject_code"), "5.5.3",
                         f"<{frame.name}>: {frame.cls} rejected: Multi-recipient bounce")
    return Status.DUNNO
