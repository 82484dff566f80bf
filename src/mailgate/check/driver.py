"""Postfix's `smtpd_check` test driver language (smtpd_check.c, #ifdef TEST), for conformance.

Reads lines such as `client NAME ADDR`, `helo NAME`, `mail ADDR`, `rcpt ADDR`,
`recipient_restrictions LIST` or `PARAM VALUE`, and prints what the driver prints: the line
echoed after `>>> `, the log lines prefixed `./smtpd_check: `, then `OK` or the reply.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

from mailgate.addressing import AddressResolver, Resolved
from mailgate.app import string_matcher
from mailgate.config.maincf import split_list
from mailgate.dns.lookup import DnsLookup
from mailgate.dns.names import HostsFile, NameService
from mailgate.dns.resolver import Resolver
from mailgate.engine.context import NAME_OK, NAME_TEMP, CheckState, Client, ClientCert
from mailgate.engine.engine import Engine
from mailgate.engine.evaluate import Evaluation
from mailgate.engine.reply import Verdict
from mailgate.engine.settings import EngineSettings
from mailgate.engine.tables import AccessTables, EngineTables
from mailgate.errors import MapError
from mailgate.maps import Registry, default_registry
from mailgate.maps.base import Map
from mailgate.maps.matchlist import DomainList, HostAddrList
from mailgate.smtp.tokens import smtpd_token

PREFIX = "./smtpd_check: "
_LISTS = {"client_restrictions": "client", "helo_restrictions": "helo",
          "sender_restrictions": "sender", "relay_restrictions": "relay",
          "recipient_restrictions": "recipient", "etrn_restrictions": "etrn",
          "data_restrictions": "data", "end_of_data_restrictions": "eod"}
_TABLE_PARAMS = frozenset({
    "mydestination", "mynetworks", "relay_domains", "permit_mx_backup_networks",
    "virtual_alias_maps", "virtual_alias_domains", "virtual_mailbox_maps",
    "virtual_mailbox_domains", "local_recipient_maps", "relay_recipient_maps", "canonical_maps",
    "sender_canonical_maps", "recipient_canonical_maps", "rbl_reply_maps",
    "smtpd_dns_reply_filter", "relay_clientcerts", "local_header_rewrite_clients"})
_INT_PARAMS = frozenset({
    "msg_verbose", "unknown_client_reject_code", "invalid_hostname_reject_code",
    "unknown_hostname_reject_code", "unknown_address_reject_code", "relay_domains_reject_code",
    "maps_rbl_reject_code", "access_map_reject_code", "access_map_defer_code", "reject_code",
    "defer_code", "non_fqdn_reject_code", "multi_recipient_bounce_reject_code",
    "unverified_sender_reject_code", "unverified_recipient_reject_code",
    "unverified_sender_defer_code", "unverified_recipient_defer_code",
    "unknown_local_recipient_reject_code", "unknown_relay_recipient_reject_code",
    "unknown_virtual_alias_reject_code", "unknown_virtual_mailbox_reject_code",
    "address_verify_poll_count", "plaintext_reject_code", "smtpd_delay_reject",
    "allow_untrusted_routing", "show_user_unknown_table_name", "smtpd_reject_unlisted_sender",
    "smtpd_reject_unlisted_recipient", "smtpd_peername_lookup", "smtpd_client_port_logging",
    "smtpd_tls_ask_ccert"})
_STRING_PARAMS = frozenset({
    "maps_rbl_domains", "myorigin", "inet_interfaces", "proxy_interfaces",
    "recipient_delimiter", "smtpd_restriction_classes", "alias_maps",
    "parent_domain_matches_subdomains", "smtpd_sender_login_maps",
    "smtpd_null_access_lookup_key", "double_bounce_sender", "smtpd_expansion_filter",
    "default_rbl_reply", "address_verify_sender", "mail_name",
    "unknown_helo_hostname_tempfail_action", "unknown_address_tempfail_action",
    "unverified_recipient_tempfail_action", "unverified_sender_tempfail_action",
    "smtpd_log_access_permit_actions", "info_log_address_format", "mydomain", "myhostname"})
_BOOLS = {"smtpd_delay_reject": "delay_reject", "allow_untrusted_routing":
          "allow_untrusted_routing", "show_user_unknown_table_name":
          "show_user_unknown_table_name", "smtpd_reject_unlisted_sender":
          "reject_unlisted_sender", "smtpd_reject_unlisted_recipient":
          "reject_unlisted_recipient"}


_DNS_STRINGS = {"default_rbl_reply": "default_rbl_reply",
                "unknown_address_tempfail_action": "unknown_address_tempfail_action",
                "unknown_helo_hostname_tempfail_action": "unknown_helo_tempfail_action"}


class DriverExit(Exception):
    """The driver stops (Postfix's fatal: in the driver)."""


class Driver:
    """The driver's state: parameter values, an engine rebuilt when they change, a session."""

    def __init__(self, out: TextIO, registry: Registry | None = None,
                 resolver: Resolver | None = None, hosts: HostsFile | None = None) -> None:
        self.out = out
        self.registry = registry or default_registry()
        self.dns_resolver = resolver or Resolver()
        self.hosts = hosts or HostsFile.read("/etc/hosts")
        self.warned: set[str] = set()
        self.params: dict[str, str] = {}
        self.settings = EngineSettings(lists={}, delay_reject=True)
        self.classes: dict[str, tuple[str, ...]] = {}
        self.st = CheckState(Client("localhost", "127.0.0.1", 0), queue_id="<queue id>",
                             protocol="SMTP")
        self.engine = self._build()

    def log(self, text: str) -> None:
        self.out.write(PREFIX + text + "\n")

    # --- configuration ------------------------------------------------------------------
    def _domains(self, name: str, default: str = "") -> DomainList:
        pdms = self.params.get("parent_domain_matches_subdomains",
                               "debug_peer_list,fast_flush_domains,mynetworks,"
                               "permit_mx_backup_networks,qmqpd_authorized_clients,"
                               "relay_domains,smtpd_access_maps")
        return DomainList.build(split_list(self.params.get(name, default)), self.registry,
                                name in split_list(pdms), name, self.log)

    def _table(self, name: str) -> Map | None:
        return self.registry.open_list(tuple(split_list(self.params.get(name, ""))))

    def _build(self) -> Engine:
        interfaces = frozenset(split_list(self.params.get("inet_interfaces", "127.0.0.1")))
        resolver = DriverResolver(
            myorigin="", mydestination=self._domains("mydestination", "localhost"),
            virtual_alias_domains=self._domains("virtual_alias_domains"),
            virtual_mailbox_domains=self._domains("virtual_mailbox_domains"),
            relay_domains=self._domains("relay_domains"),
            interface_addresses=interfaces, allow_percent_hack=False,
            swap_bangpath=False, append_at_myorigin=False, sender=lambda: self.st.sender)
        mynetworks = HostAddrList.build(split_list(self.params.get("mynetworks", "")),
                                        self.registry, "mynetworks", True, self.log)
        opened: dict[str, Any] = {name: self.registry.open_list(tuple(split_list(self.params.get(name, ""))))
                  for name in ("local_recipient_maps", "virtual_mailbox_maps",
                               "virtual_alias_maps", "relay_recipient_maps", "canonical_maps",
                               "sender_canonical_maps", "recipient_canonical_maps")}
        tables = EngineTables(resolver=resolver, mynetworks=mynetworks,
                              access=AccessTables(self.registry),
                              inet_interfaces=interfaces,
                              log_permit=string_matcher(tuple(split_list(self.params.get(
                                  "smtpd_log_access_permit_actions", ""))), self.registry),
                              alias_unknown_text="user unknown",
                              relay_clientcerts=self.registry.open_list(
                                  tuple(split_list(self.params.get("relay_clientcerts", "")))),
                              dns=DnsLookup(self.dns_resolver, self.registry.open_list(tuple(
                                  split_list(self.params.get("smtpd_dns_reply_filter", "")))),
                                  self.log),
                              names=NameService(self.dns_resolver, self.hosts),
                              myhostname=self.params.get("myhostname", "localhost.localdomain"),
                              mx_backup_networks=HostAddrList.build(
                                  split_list(self.params.get("permit_mx_backup_networks", "")),
                                  self.registry, "permit_mx_backup_networks", True, self.log),
                              rbl_reply_maps=self._table("rbl_reply_maps"),
                              warned=self.warned,
                              **opened)
        engine = Engine(self.settings, tables, self.log, driver=True)
        return engine

    def set_param(self, name: str, value: str) -> None:
        self.params[name] = value
        if name in _BOOLS or name in _INT_PARAMS:
            if name in _BOOLS:
                flags: dict[str, Any] = {_BOOLS[name]: value != "0"}
                self.settings = replace(self.settings, **flags)
            elif name.endswith("_code"):
                self.settings = replace(self.settings,
                                        codes={**self.settings.codes, name: int(value)})
        elif name == "recipient_delimiter":
            self.settings = replace(self.settings, recipient_delimiter=value)
        elif name == "smtpd_null_access_lookup_key":
            self.settings = replace(self.settings, null_access_key=value)
        elif name == "double_bounce_sender":
            self.settings = replace(self.settings, double_bounce_sender=value)
        elif name == "parent_domain_matches_subdomains":
            self.settings = replace(self.settings,
                                    access_parent_matches="smtpd_access_maps" in split_list(value))
        elif name == "smtpd_log_access_permit_actions":
            pass  # read by _build()
        elif name in _DNS_STRINGS:
            strings: dict[str, Any] = {_DNS_STRINGS[name]: value}
            self.settings = replace(self.settings, **strings)
        elif name == "maps_rbl_domains":
            self.settings = replace(self.settings, maps_rbl_domains=tuple(split_list(value)))
        self.engine = self._build()

    def set_list(self, stage: str, value: str) -> None:
        self.settings = replace(self.settings,
                                lists={**self.settings.lists, stage: tuple(split_list(value))})
        self.engine = self._build()

    def set_class(self, value: str) -> None:
        name, _, members = value.partition(",")
        self.settings = replace(self.settings, classes={
            **self.settings.classes, name.lower(): tuple(split_list(members))})
        self.engine = self._build()

    # --- commands -------------------------------------------------------------------------
    async def command(self, line: str) -> str | None:
        """Run one line; the result line to print (None for comments and blank lines)."""
        words = line.split()
        if not words or line.startswith("#"):
            return None
        if line.startswith("!"):
            return f"exit {subprocess.run(line[1:], shell=True, check=False).returncode}"
        cmd, args = words[0], words[1:]
        st = self.st
        if cmd == "client" and len(args) in (2, 3):
            status = int(args[2]) if len(args) == 3 else \
                (NAME_TEMP if args[0] == "unknown" else NAME_OK)
            st.where = "CONNECT"
            st.client = Client(args[0], args[1], 0, args[0], status, status)
            st.namaddr = st.client.namaddr
            return _shown(await self.engine.check_client(st))
        if cmd == "helo" and len(args) == 1:
            st.where = "HELO"
            verdict = await self.engine.check_helo(st, args[0])
            st.helo = args[0]
            return _shown(verdict)
        if cmd == "mail" and len(args) == 1:
            st.where = "MAIL"
            sender = args[0][1:-1] if args[0].startswith("<") and args[0].endswith(">") \
                else args[0]
            st.sender = sender
            return _shown(await self.engine.check_mail(st, sender))
        if cmd == "rcpt" and len(args) == 1:
            st.where = "RCPT"
            rcpt = args[0][1:-1] if args[0].startswith("<") and args[0].endswith(">") \
                else args[0]
            return _shown(await self.engine.check_rcpt(st, rcpt))
        if cmd == "fingerprint" and len(args) == 1:
            st.ccert = ClientCert("", "", args[0], args[0], False)  # as smtpd_check.c's driver
            return "OK"
        if cmd == "rewrite" and not args:
            return self.rewrite()
        if cmd == "flush_dnsxl_cache" and not args:
            self.dns_resolver.flush()
            return "OK"
        if cmd == "restriction_class" and len(args) == 1:
            self.set_class(args[0])
            return "OK"
        if cmd in _LISTS and len(args) == 1:
            self.set_list(_LISTS[cmd], args[0])
            return "OK"
        if (cmd in _TABLE_PARAMS or cmd in _INT_PARAMS or cmd in _STRING_PARAMS) \
                and len(args) == 1:
            self.set_param(cmd, args[0])
            return "OK"
        return "bad command"

    def rewrite(self) -> str:
        """local_header_rewrite_clients: a table failure is a temporary error."""
        st = self.st
        ev = Evaluation(self.engine, st, "", st.helo, st.sender, st.recipient)
        for item in split_list(self.params.get("local_header_rewrite_clients", "")):
            if ":" not in item:
                continue
            table = self.registry.open_or_failed(item)
            try:
                if table.lookup(self.st.client.addr) is not None:
                    return "OK"
            except MapError:
                ev.warn(f'{item} lookup error for "{self.st.client.addr}"')
                ev.reject(451, "4.3.0", "Temporary lookup error", hard=True)
                return str(ev.reply)
        return "OK"


def _shown(verdict: Verdict) -> str:
    """What the driver prints for a check: the reply, or OK."""
    return "OK" if verdict.reply is None else verdict.reply.line


@dataclass(frozen=True)
class DriverResolver(AddressResolver):
    """The driver's resolver stub: classifies domains, never rewrites. It is asked with the
    current sender too; an address without `@` or with `%` is fatal, as in the driver."""

    sender: Callable[[], str | None] = lambda: None

    def resolve(self, address: str) -> Resolved:
        for addr in (self.sender(), address):
            if addr and ("@" not in addr or "%" in addr):
                raise DriverExit(f"fatal: {addr}: address rewriting is disabled")
        return super().resolve(address)


async def run_script(lines: list[str], out: TextIO, servers: tuple[str, ...] = (),
                     timeout: float = 5.0) -> int:
    """Run a driver script; DNS queries go to `servers` (default: /etc/resolv.conf)."""
    resolver = Resolver(servers, timeout=timeout)
    driver = Driver(out, resolver=resolver)
    try:
        for line in lines:
            out.write(f">>> {line}\n")
            try:
                result = await driver.command(line)
            except DriverExit as exc:
                out.write(PREFIX + str(exc) + "\n")
                return 1
            if result is not None:
                out.write(result + "\n")
        return 0
    finally:
        resolver.close()


def run_tokens(lines: list[str], out: TextIO) -> int:
    """The `smtpd_token` driver: each line, then its tokens."""
    for line in lines:
        out.write(line + "\n")
        for token in smtpd_token(line):
            out.write(f"Token type:  {token.type.value}\nToken value: {token.value}\n")
    return 0

