"""The smtpd services to run and where they listen: master.cf's inet smtpd lines, or smtpd_listen."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from mailgate.app import SmtpdSpec
from mailgate.config.config import Config
from mailgate.config.mastercf import (
    SmtpdService,
    load_master_cf,
    postscreen_config,
    service_config,
    smtpd_services,
    unused_overrides,
)
from mailgate.config.settings import ListenAddress, SmtpdSettings
from mailgate.engine.settings import EngineSettings
from mailgate.server.postscreen.settings import PostscreenSettings
from mailgate.server.tls import server_context


@dataclass
class Listeners:
    """The smtpd services and where they listen: socket i (once bound) serves
    specs[routes[i]]."""

    specs: list[SmtpdSpec]
    addresses: list[ListenAddress]
    routes: list[int]
    warnings: list[str]
    sockets: list[socket.socket] = field(default_factory=list)


def smtpd_listeners(cfg: Config) -> Listeners:
    """The smtpd services to run: master.cf's inet smtpd lines (each with main.cf plus its -o
    settings, checked here: a refused line or a bad value stops start-up with its file and
    line), or, without a master.cf (or one without such lines), main.cf on smtpd_listen."""
    master = load_master_cf(cfg.config_dir) if cfg.config_dir else None
    services = smtpd_services(master, cfg) if master is not None else []
    warnings = [*master.warnings, *unused_overrides(master, cfg)] if master else []
    if not services:
        if master is not None:
            warnings.append(f"{master.path}: no smtpd service of type inet: listening on "
                            "smtpd_listen")
        listen = list(SmtpdSettings.from_config(cfg).listen)
        return Listeners([SmtpdSpec(None, cfg)], listen, [0] * len(listen), warnings)
    out = Listeners([], [], [], warnings)
    for service in services:
        service_cfg = service_config(cfg, service)
        settings = SmtpdSettings.from_config(service_cfg)
        server_context(settings.tls)  # a certificate that does not load stops start-up
        EngineSettings.from_config(service_cfg)  # and so does an open relay
        for where in service_addresses(service, cfg):
            out.addresses.append(where)
            out.routes.append(len(out.specs))
        screening = postscreen_config(cfg, service)
        if screening is not None:  # a bad postscreen_* value stops start-up too
            PostscreenSettings.from_config(screening)
        out.specs.append(SmtpdSpec(service.name, service_cfg, screening))
    return out


def service_addresses(service: SmtpdService, cfg: Config) -> list[ListenAddress]:
    """Where a master.cf service listens: its host, or (none given) what inet_interfaces
    names, as Postfix's master does (`all`: every IPv4 address, and IPv6 with inet_protocols)."""
    if service.host is not None:
        return [ListenAddress(service.host, service.port)]
    protocols = {p.lower() for p in cfg.get_list("inet_protocols")}
    v4 = bool(protocols & {"all", "ipv4"}) or not protocols
    v6 = bool(protocols & {"all", "ipv6"})
    hosts: list[str] = []
    for item in cfg.get_list("inet_interfaces"):
        word = item.lower()
        if word == "all":
            hosts += (["0.0.0.0"] if v4 else []) + (["::"] if v6 else [])
        elif word == "loopback-only":
            hosts += (["127.0.0.1"] if v4 else []) + (["::1"] if v6 else [])
        else:
            hosts.append(item[1:-1] if item.startswith("[") else item)
    return [ListenAddress(host, service.port) for host in dict.fromkeys(hosts)]
