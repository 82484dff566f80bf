"""anvil's client limits as a connection meets them: exemptions, the counted identity, the 421s."""

from __future__ import annotations

import time
from collections.abc import Callable

from mailgate.anvil import ConnectionTable
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import Client
from mailgate.maps.matchlist import HostAddrList
from mailgate.server.sharedlimits import TEMPFAIL, SiteCounts


def service_name(sockname: object) -> str:
    """The service name in anvil's warnings: Postfix's master.cf name, which is `smtp` for
    port 25 and `host:port` for a service on another port (as the reference instance)."""
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return "smtp"
    host, port = str(sockname[0]), int(sockname[1])
    if port == 25:
        return "smtp"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClientLimits:
    """One smtpd service's view of the shared anvil table (smtpd's anvil client)."""

    def __init__(self, settings: SmtpdSettings, connections: ConnectionTable,
                 exceptions: HostAddrList, xclient_hosts: Callable[[Client], bool],
                 site: SiteCounts | None = None) -> None:
        self.settings = settings
        self.connections = connections
        self.exceptions = exceptions
        self.xclient_hosts = xclient_hosts
        self.site = site  # the counts of every node, when the state is shared (Redis)

    def exempt(self, client: Client) -> bool:
        """smtpd_client_event_limit_exceptions and XCLIENT-authorized clients."""
        try:
            exempt = self.exceptions.match(client.name, client.addr)
        except Exception:
            exempt = False
        return exempt or self.xclient_hosts(client)

    def ident(self, client: Client, service: str, key: str) -> str:
        """anvil's `service:client` for a client that anvil counts; empty when no client
        limit is set (smtpd then has no anvil client) or the client is exempt."""
        if not self.settings.anvil or self.exempt(client):
            return ""
        return f"{service}:{key}"

    def event_rate(self, key: str, ident: str, event: str, count: bool) -> int:
        """anvil's rate of an event (anvil.EVENTS) for a client it counts: counted
        (`count`), or as it stands (anvil's newtls_status)."""
        s = self.settings
        return self.connections.event(key, event, time.time(), s.rate_time_unit,
                                      s.rate_window_sliding, ident, count)

    async def counted_rate(self, key: str, ident: str, event: str) -> int:
        """Count a MAIL, RCPT or AUTH of a client anvil counts and return its rate: this
        node's, or with shared state every node's (TEMPFAIL when the store failed so)."""
        local = self.event_rate(key, ident, event, True)
        if self.site is None:
            return local
        return await self.site.event(key, event, local)

    async def over_limit(self, client: Client, count: int, total: int, service: str,
                         key: str, ident: str) -> tuple[str, str]:
        """(421 reply, warning) when a connection limit is exceeded, else empty strings.
        A client that anvil counts (`ident`) is registered first, as smtpd's
        anvil_clnt_connect(): a connection refused for the count adds to the rate. With
        shared state, the counts compared are every node's (the caller ends the count
        with site.disconnect())."""
        s = self.settings
        addr = client.addr
        namaddr = client.namaddr
        if total > s.max_connections:
            return (f"421 4.7.0 {s.myhostname} Error: too many connections",
                    f"Connection limit exceeded: {total} sessions (smtpd_max_connections) "
                    f"at {namaddr}")
        if not ident:
            return "", ""
        rate = self.connections.register(key, ident, count, time.time(), s.rate_time_unit,
                                         s.rate_window_sliding)
        if self.site is not None:
            count, rate = await self.site.connect(key, count, rate)
            if count == TEMPFAIL:
                # (the store's one warning per change of state says why)
                return f"421 4.3.5 {s.myhostname} Server configuration problem", ""
        if s.connection_count_limit and count > s.connection_count_limit:
            return (f"421 4.7.0 {s.myhostname} Error: too many connections from {addr}",
                    f"Connection concurrency limit exceeded: {count} from {namaddr} "
                    f"for service {service}")
        if s.connection_rate_limit and rate > s.connection_rate_limit:
            return (f"421 4.7.0 {s.myhostname} Error: too many connections from {addr}",
                    f"Connection rate limit exceeded: {rate} from {namaddr} "
                    f"for service {service}")
        return "", ""
