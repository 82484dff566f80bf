"""postscreen's parameters (Postfix 3.7 names and defaults) as frozen, typed settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailgate.config.config import Config
from mailgate.dns.rbl import PatternError, Site, parse_site
from mailgate.errors import ConfigError
from mailgate.smtp.hostnames import valid_hostname


class Action(enum.Enum):
    """What a failed test does (postscreen.c PSC_ACT_*)."""

    DROP = "drop"  # reply 521 now and hang up
    ENFORCE = "enforce"  # reply 550 to each RCPT (and log it), after the tests
    IGNORE = "ignore"  # log the failure, go on as if it passed (not cached)


# `continue` is Postfix's compatibility name for ignore
_ACTIONS = {"drop": Action.DROP, "enforce": Action.ENFORCE, "ignore": Action.IGNORE,
            "continue": Action.IGNORE}


def _action(cfg: Config, name: str) -> Action:
    value = cfg.get_str(name)
    action = _ACTIONS.get(value.lower())
    if action is None:  # postscreen.c: fatal: bad %s value: %s
        raise ConfigError(f"{cfg.origin(name)}: bad {name} value: {value}")
    return action


def dnsbl_sites(cfg: Config) -> tuple[Site, ...]:
    """postscreen_dnsbl_sites: `domain[=filter][*weight]` entries (psc_dnsbl_add_site),
    checked as postscreen does at start-up."""
    name = "postscreen_dnsbl_sites"
    out = []
    for spec in cfg.get_list(name):
        text, star, weight = spec.partition("*")
        if star and not weight.lstrip("-").isdigit():
            raise ConfigError(f'{cfg.origin(name)}: bad DNSBL weight factor "{weight}" in '
                              f'"{spec}"')
        try:
            site = parse_site(spec, weighted=True)
        except PatternError as exc:
            raise ConfigError(f"{cfg.origin(name)}: bad DNSBL filter syntax: {exc}") from None
        if not valid_hostname(site.domain):
            raise ConfigError(f'{cfg.origin(name)}: bad DNSBL domain name "{site.domain}" in '
                              f'"{text}"')
        out.append(site)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PostscreenSettings:
    """What postscreen needs, in Postfix's parameter names (postconf.proto)."""

    myhostname: str
    banner: str  # smtpd_banner: the engine's own 220 greeting
    greet_banner: str  # empty: no pregreet test
    greet_wait: float
    greet_action: Action
    greet_ttl: int
    access_list: tuple[str, ...]
    denylist_action: Action
    allowlist_interfaces: tuple[str, ...]
    dnsbl_sites: tuple[Site, ...]
    dnsbl_threshold: int
    dnsbl_allowlist_threshold: int
    dnsbl_action: Action
    dnsbl_reply_map: str
    dnsbl_min_ttl: int
    dnsbl_max_ttl: int
    dnsbl_timeout: float
    pipelining_enable: bool
    pipelining_action: Action
    pipelining_ttl: int
    non_smtp_command_enable: bool
    non_smtp_command_action: Action
    non_smtp_command_ttl: int
    bare_newline_enable: bool
    bare_newline_action: Action
    bare_newline_ttl: int
    forbidden_commands: tuple[str, ...]
    cache_map: str  # empty: no cache
    cache_retention_time: int
    cache_cleanup_interval: int
    command_count_limit: int
    command_time_limit: float
    client_connection_count_limit: int
    helo_required: bool
    disable_vrfy: bool
    discard_ehlo_keywords: frozenset[str]
    message_size_limit: int
    line_length_limit: int
    smtputf8_enable: bool
    soft_bounce: bool
    respectful_logging: bool  # ALLOWLISTED/DENYLISTED (yes) or WHITELISTED/BLACKLISTED

    @property
    def min_ttl(self) -> int:
        """psc_min_ttl: the shortest test TTL, what a failure under `ignore` is remembered."""
        return min(self.greet_ttl, self.dnsbl_min_ttl, self.pipelining_ttl,
                   self.non_smtp_command_ttl, self.bare_newline_ttl)

    @classmethod
    def from_config(cls, cfg: Config) -> PostscreenSettings:
        """Raises ConfigError (file:line) for a bad value, as postscreen's start-up does."""
        return cls(
            myhostname=cfg.get_str("myhostname"),
            banner=cfg.get_str("smtpd_banner"),
            greet_banner=cfg.get_str("postscreen_greet_banner"),
            greet_wait=cfg.get_time("postscreen_greet_wait"),
            greet_action=_action(cfg, "postscreen_greet_action"),
            greet_ttl=int(cfg.get_time("postscreen_greet_ttl")),
            access_list=cfg.get_list("postscreen_access_list"),
            denylist_action=_action(cfg, "postscreen_denylist_action"),
            allowlist_interfaces=cfg.get_list("postscreen_allowlist_interfaces"),
            dnsbl_sites=dnsbl_sites(cfg),
            dnsbl_threshold=cfg.get_int("postscreen_dnsbl_threshold"),
            dnsbl_allowlist_threshold=cfg.get_int("postscreen_dnsbl_allowlist_threshold"),
            dnsbl_action=_action(cfg, "postscreen_dnsbl_action"),
            dnsbl_reply_map=cfg.get_str("postscreen_dnsbl_reply_map"),
            dnsbl_min_ttl=int(cfg.get_time("postscreen_dnsbl_min_ttl")),
            dnsbl_max_ttl=int(cfg.get_time("postscreen_dnsbl_max_ttl")),
            dnsbl_timeout=cfg.get_time("postscreen_dnsbl_timeout"),
            pipelining_enable=cfg.get_bool("postscreen_pipelining_enable"),
            pipelining_action=_action(cfg, "postscreen_pipelining_action"),
            pipelining_ttl=int(cfg.get_time("postscreen_pipelining_ttl")),
            non_smtp_command_enable=cfg.get_bool("postscreen_non_smtp_command_enable"),
            non_smtp_command_action=_action(cfg, "postscreen_non_smtp_command_action"),
            non_smtp_command_ttl=int(cfg.get_time("postscreen_non_smtp_command_ttl")),
            bare_newline_enable=cfg.get_bool("postscreen_bare_newline_enable"),
            bare_newline_action=_action(cfg, "postscreen_bare_newline_action"),
            bare_newline_ttl=int(cfg.get_time("postscreen_bare_newline_ttl")),
            forbidden_commands=cfg.get_list("postscreen_forbidden_commands"),
            cache_map=cfg.get_str("postscreen_cache_map"),
            cache_retention_time=int(cfg.get_time("postscreen_cache_retention_time")),
            cache_cleanup_interval=int(cfg.get_time("postscreen_cache_cleanup_interval")),
            command_count_limit=cfg.get_int("postscreen_command_count_limit"),
            command_time_limit=cfg.get_time("postscreen_command_time_limit"),
            client_connection_count_limit=cfg.get_int(
                "postscreen_client_connection_count_limit"),
            helo_required=cfg.get_bool("postscreen_helo_required"),
            disable_vrfy=cfg.get_bool("postscreen_disable_vrfy_command"),
            discard_ehlo_keywords=frozenset(
                k.upper() for k in cfg.get_list("postscreen_discard_ehlo_keywords")),
            message_size_limit=cfg.get_size("message_size_limit"),
            line_length_limit=cfg.get_int("line_length_limit"),
            smtputf8_enable=cfg.get_bool("smtputf8_enable"),
            soft_bounce=cfg.get_bool("soft_bounce"),
            respectful_logging=cfg.get_bool("respectful_logging"),
        )
