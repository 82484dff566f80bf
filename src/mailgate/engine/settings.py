"""The engine's frozen settings: stage lists, restriction classes and reply-code parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.config.config import Config
from mailgate.dns.rbl import PatternError, Site, parse_site
from mailgate.errors import ConfigError

# Stage list parameters (smtpd_check.c) by the engine's stage name.
LIST_PARAMS = {
    "client": "smtpd_client_restrictions", "helo": "smtpd_helo_restrictions",
    "sender": "smtpd_sender_restrictions", "relay": "smtpd_relay_restrictions",
    "recipient": "smtpd_recipient_restrictions", "data": "smtpd_data_restrictions",
    "eod": "smtpd_end_of_data_restrictions", "etrn": "smtpd_etrn_restrictions",
}
_RELAY_CONTROL = frozenset({"reject_unauth_destination", "defer_unauth_destination", "reject",
                            "defer", "defer_if_permit", "check_relay_domains"})
_CODES = ("reject_code", "defer_code", "access_map_reject_code", "access_map_defer_code",
          "relay_domains_reject_code", "non_fqdn_reject_code", "invalid_hostname_reject_code",
          "unknown_client_reject_code", "multi_recipient_bounce_reject_code",
          "plaintext_reject_code", "unknown_local_recipient_reject_code",
          "unknown_virtual_mailbox_reject_code", "unknown_virtual_alias_reject_code",
          "unknown_relay_recipient_reject_code", "unknown_hostname_reject_code",
          "unknown_address_reject_code", "maps_rbl_reject_code")


@dataclass(frozen=True)
class EngineSettings:
    lists: dict[str, tuple[str, ...]]
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    delay_reject: bool = True
    relay_before_recipient: bool = True
    reject_unlisted_recipient: bool = True
    reject_unlisted_sender: bool = False
    show_user_unknown_table_name: bool = True
    soft_bounce: bool = False
    allow_untrusted_routing: bool = False
    null_access_key: str = "<>"
    access_parent_matches: bool = True
    recipient_delimiter: str = ""
    double_bounce_sender: str = "double-bounce"
    # DNS-based restrictions
    unknown_address_tempfail_action: str = "defer_if_permit"
    unknown_helo_tempfail_action: str = "defer_if_permit"
    default_rbl_reply: str = ("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked "
                              "using $rbl_domain${rbl_reason?; $rbl_reason}")
    maps_rbl_domains: tuple[str, ...] = ()
    expansion_filter: frozenset[str] = field(default_factory=lambda: _default_filter())
    dnsbl_sites: tuple[Site, ...] = ()
    dnsbl_threshold: int = 1
    dnsbl_reply: str = ""
    smtputf8_enable: bool = True

    @classmethod
    def from_config(cls, cfg: Config, policyd: bool = False) -> EngineSettings:
        """smtpd's settings; `policyd`: the one list is policyd_restrictions (no relay
        check: the smtpd that asks has its own)."""
        classes: dict[str, tuple[str, ...]] = {}
        for name in cfg.get_list("smtpd_restriction_classes"):
            if cfg.raw(name) is None:
                raise ConfigError(f"restriction class `{name}' needs a definition")
            classes[name.lower()] = cfg.get_list(name)
        pdms = set(cfg.get_list("parent_domain_matches_subdomains"))
        settings = cls(
            lists={"policyd": cfg.get_list("policyd_restrictions")} if policyd else
            {stage: cfg.get_list(param) for stage, param in LIST_PARAMS.items()},
            classes=classes,
            codes={name: cfg.get_int(name) for name in _CODES},
            delay_reject=cfg.get_bool("smtpd_delay_reject"),
            relay_before_recipient=cfg.get_bool("smtpd_relay_before_recipient_restrictions"),
            reject_unlisted_recipient=cfg.get_bool("smtpd_reject_unlisted_recipient"),
            reject_unlisted_sender=cfg.get_bool("smtpd_reject_unlisted_sender"),
            show_user_unknown_table_name=cfg.get_bool("show_user_unknown_table_name"),
            soft_bounce=cfg.get_bool("soft_bounce"),
            allow_untrusted_routing=cfg.get_bool("allow_untrusted_routing"),
            null_access_key=cfg.get_str("smtpd_null_access_lookup_key"),
            access_parent_matches="smtpd_access_maps" in pdms,
            recipient_delimiter=cfg.get_str("recipient_delimiter"),
            double_bounce_sender=cfg.get_str("double_bounce_sender"),
            unknown_address_tempfail_action=_tempfail(cfg, "unknown_address_tempfail_action"),
            unknown_helo_tempfail_action=_tempfail(cfg,
                                                   "unknown_helo_hostname_tempfail_action"),
            default_rbl_reply=cfg.raw("default_rbl_reply") or "",  # expanded per reply
            maps_rbl_domains=cfg.get_list("maps_rbl_domains"),
            expansion_filter=frozenset(unescape(cfg.get_str("smtpd_expansion_filter"))),
            dnsbl_sites=_sites(cfg),
            dnsbl_threshold=cfg.get_int("smtpd_dnsbl_threshold"),
            dnsbl_reply=cfg.raw("smtpd_dnsbl_reply") or "",
            smtputf8_enable=cfg.get_bool("smtputf8_enable"),
        )
        if not policyd:
            settings.check_relay_control()
        return settings

    def code(self, name: str) -> int:
        return self.codes.get(name, _DEFAULT_CODES[name])

    def check_relay_control(self) -> None:
        """Refuse to start an open relay (smtpd.c: the mandatory relay-control check)."""
        if self._has_relay_control(self.lists.get("recipient", ()), 0) or \
                self._has_relay_control(self.lists.get("relay", ()), 0):
            return
        raise ConfigError(
            "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify "
            "at least one working instance of: reject_unauth_destination, "
            "defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains")

    def startup_warnings(self) -> list[str]:
        """What smtpd's start-up check says about the recipient and relay lists."""
        out: list[str] = []
        if not self._has_relay_control(self.lists.get("recipient", ()), 0, out.append):
            self._has_relay_control(self.lists.get("relay", ()), 0, out.append)
        return out

    def _has_relay_control(self, names: tuple[str, ...], depth: int,
                           warn: Callable[[str], None] = lambda text: None) -> bool:
        """smtpd_check.c has_required(): searched through classes, stops at `permit`
        (warning about what follows it), skips the restriction after warn_if_reject."""
        skip = False
        for i, name in enumerate(n.lower() for n in names):
            if skip:
                skip = False
                continue
            if name == "warn_if_reject":
                skip = i + 1 < len(names)
            elif name == "permit":
                if i + 1 < len(names):
                    warn(f"restriction `{names[i + 1]}' after `{names[i]}' is ignored")
                return False
            elif name in _RELAY_CONTROL or (name in self.classes and depth < 100 and \
                    self._has_relay_control(self.classes[name], depth + 1, warn)):
                return True
        return False


_DEFAULT_CODES = {
    "reject_code": 554, "defer_code": 450, "access_map_reject_code": 554,
    "access_map_defer_code": 450, "relay_domains_reject_code": 554, "non_fqdn_reject_code": 504,
    "invalid_hostname_reject_code": 501, "unknown_client_reject_code": 450,
    "multi_recipient_bounce_reject_code": 550, "plaintext_reject_code": 450,
    "unknown_local_recipient_reject_code": 550, "unknown_virtual_mailbox_reject_code": 550,
    "unknown_virtual_alias_reject_code": 550, "unknown_relay_recipient_reject_code": 550,
    "unknown_hostname_reject_code": 450, "unknown_address_reject_code": 450,
    "maps_rbl_reject_code": 554,
}


def unescape(text: str) -> str:
    """Postfix unescape(): `\\t`, `\\n`, octal `\\40`, and `\\x` for any other x."""
    out: list[str] = []
    i = 0
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        j = i + 1
        while j < len(text) and j < i + 4 and text[j] in "01234567":
            j += 1
        if j > i + 1:
            out.append(chr(int(text[i + 1:j], 8)))
            i = j
            continue
        out.append(simple.get(nxt, nxt))
        i += 2
    return "".join(out)


def _default_filter() -> frozenset[str]:
    return DEFAULT_FILTER


DEFAULT_FILTER: frozenset[str] = frozenset(unescape(
    "\\t\\40!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_"
    "`abcdefghijklmnopqrstuvwxyz{|}~"))


def _tempfail(cfg: Config, name: str) -> str:
    value = cfg.get_str(name).lower()
    if value not in ("defer_if_permit", "defer"):
        raise ConfigError(f"{cfg.origin(name)}: bad configuration (expected defer_if_permit "
                          f"or defer): {name} = {cfg.get_str(name)}")
    return value


def _sites(cfg: Config) -> tuple[Site, ...]:
    out = []
    for spec in cfg.get_list("smtpd_dnsbl_sites"):
        try:
            out.append(parse_site(spec, weighted=True))
        except PatternError as exc:
            raise ConfigError(f"{cfg.origin('smtpd_dnsbl_sites')}: bad DNS list {spec}: "
                              f"{exc}") from exc
    return tuple(out)
