"""The PROXY protocol in front of a session: read the header, or answer as Postfix does when it is bad."""

from __future__ import annotations

from mailgate.config.settings import SmtpdSettings
from mailgate.server.connection import Connection
from mailgate.server.session import Services, Session, escape
from mailgate.smtp import haproxy
from mailgate.smtp.haproxy import ProxyHeader


async def proxy_header(settings: SmtpdSettings, connection: Connection) -> ProxyHeader | str:
    """The PROXY header, taken off the input; or the reason it is refused."""
    if not await connection.first_input(settings.upstream_proxy_timeout):
        return "timeout error"
    data = connection.conn.buffered(haproxy.HEADER_MAX)
    if not data:
        return "EOF"
    try:
        header = haproxy.parse(data, ipv4=True, ipv6=settings.ipv6)
    except haproxy.ProxyError as exc:
        return f"{exc}: {escape(data)}"
    connection.conn.consume(header.length)
    return header


async def proxy_failed(settings: SmtpdSettings, services: Services, connection: Connection,
                       reason: str, addr: str, port: int) -> None:
    """Postfix's answer to a missing or bad PROXY header: the warning, the proxy's own
    connect and disconnect lines, `421 4.3.0 HOST Server local error`."""
    services.log.log("smtpd", f"warning: haproxy read: {reason}")
    client = await services.engine.connect(addr, port, settings.peername_lookup)
    session = Session(settings, services, client, connection.conn)
    session.log(f"connect from {session.namaddr}")
    connection.write(f"421 4.3.0 {settings.myhostname} Server local error\r\n".encode())
    await connection.drain()
    session.log(f"disconnect from {session.namaddr} commands=0/0")
