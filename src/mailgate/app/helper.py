"""The root delivery helper: writes a worker's Maildir deliveries with each mailbox owner's rights."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from dataclasses import replace
from pathlib import Path

from mailgate.app.wiring import build_resolver, interface_addresses
from mailgate.config.config import Config
from mailgate.config.settings import DeliverySettings, SmtpdSettings
from mailgate.delivery.agent import DeliveryRequest, DeliveryResult, Status
from mailgate.delivery.helper import serve
from mailgate.delivery.maildir import MaildirAgent
from mailgate.delivery.router import Route, Router, Transports
from mailgate.maps import MapOptions, default_registry
from mailgate.privileges import Owner
from mailgate.queue.durable import DurableRenamer


class Mailboxes:
    """Chooses, from the helper's own tables, the Maildir and the owner for a recipient
    (virtual_uid_maps/virtual_gid_maps; the local user's passwd entry; else mail_owner),
    and writes it with that owner's file system rights."""

    def __init__(self, cfg: Config, owner: Owner, renamer: DurableRenamer) -> None:
        registry = default_registry(MapOptions.from_config(cfg))
        delivery = DeliverySettings.from_config(cfg)
        smtpd = SmtpdSettings.from_config(cfg)
        local = interface_addresses(cfg, [a.host for a in smtpd.listen])
        self.router = Router(
            build_resolver(cfg, registry, local),
            registry.open_list(cfg.get_list("virtual_mailbox_maps")),
            delivery.virtual_mailbox_base, delivery.home_mailbox, delivery.recipient_delimiter,
            registry.open_list(cfg.get_list("virtual_uid_maps")),
            registry.open_list(cfg.get_list("virtual_gid_maps")),
            Transports.from_config(cfg, registry))
        self.owner = owner
        self.minimum_uid = cfg.get_int("virtual_minimum_uid")
        self.agents = {name: MaildirAgent(name, smtpd.myhostname, renamer, as_owner=True)
                       for name in ("virtual", "local")}

    def _owner(self, route: Route, recipient: str) -> tuple[int, int] | str:
        """The mailbox owner's uid:gid, or why there is none."""
        if route.transport == "local":  # local(8): the user's own identity, root's never
            user = Path(route.nexthop).relative_to(self.router.virtual_mailbox_base).parts[0]
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                return self.owner.uid, self.owner.gid
            if entry.pw_uid == 0:
                return self.owner.uid, self.owner.gid
            return entry.pw_uid, entry.pw_gid
        uid = self.owner.uid if route.uid < 0 else route.uid
        gid = self.owner.gid if route.gid < 0 else route.gid
        if uid < self.minimum_uid:  # virtual(8)'s check
            return (f"bad virtual_uid_maps result for recipient {recipient}: uid {uid} < "
                    f"virtual_minimum_uid {self.minimum_uid}")
        return uid, gid

    async def deliver(self, transport: str, request: DeliveryRequest) -> DeliveryResult:
        route = self.router.route(request.recipient)
        if route.error or route.transport != transport or transport not in self.agents:
            text = route.error or f"mail transport {transport} is not {route.transport}"
            return DeliveryResult(Status.DEFERRED, "4.3.0", text, transport)
        owner = self._owner(route, request.recipient)
        if isinstance(owner, str):
            return DeliveryResult(Status.DEFERRED, "4.3.5",
                                  f"mail system configuration error: {owner}", transport)
        return await self.agents[transport].deliver(
            replace(request, nexthop=route.nexthop, uid=owner[0], gid=owner[1]))


async def helper_main(cfg: Config, sock: socket.socket, owner: Owner) -> None:
    """Serve one worker's delivery requests until it closes the connection."""
    os.setgroups([])  # the owners' rights only, never root's groups
    renamer = DurableRenamer(asyncio.get_running_loop())
    try:
        await serve(sock, Mailboxes(cfg, owner, renamer).deliver)
    finally:
        renamer.stop()
