"""Frozen, typed settings for each component, built once from a Config and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config.config import Config
from mailgate.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int


def host_port(item: str, default_port: int | None = None) -> ListenAddress | None:
    """`host:port` or `[ipv6]:port`; with a default port also `host`, `[ipv6]` and a bare
    IPv6 address. None when malformed."""
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if rest or not bracket else None)
    elif default_port is not None and item.count(":") != 1:
        host, port = item, None
    else:
        host, _, port = item.rpartition(":")
    if port is None and default_port is not None:
        port = str(default_port)
    if not host or not port or not port.isdigit() or not 0 <= int(port) < 65536:
        return None
    return ListenAddress(host, int(port))


def parse_listen(items: tuple[str, ...], origin: str,
                 name: str = "smtpd_listen") -> tuple[ListenAddress, ...]:
    """`host:port` and `[ipv6]:port` items of a listen parameter (`smtpd_listen`)."""
    out = []
    for item in items:
        address = host_port(item)
        if address is None:
            raise ConfigError(f"{origin}: bad {name} address: {item!r} (use host:port "
                              "or [ipv6]:port)")
        out.append(address)
    return tuple(out)


# smtpd_forbid_bare_newline (Postfix 3.7.11, case-insensitive): `yes` is its compatibility
# alias of `normalize`; `no` ends DATA at <CR><LF>.<CR><LF> only, as `normalize` does
# (docs/decisions/0002-bare-newline-and-smuggling.md).
_BARE_NEWLINE = {"no": "no", "normalize": "normalize", "yes": "normalize", "reject": "reject"}


@dataclass(frozen=True, slots=True)
class SmtpdSettings:
    """What the SMTP server needs, in Postfix's parameter names."""

    myhostname: str
    mail_name: str
    banner: str
    syslog_name: str
    listen: tuple[ListenAddress, ...]
    line_length_limit: int
    message_size_limit: int
    header_size_limit: int
    queue_minfree: int
    recipient_limit: int
    recipient_overshoot_limit: int
    timeout: float
    per_request_deadline: bool
    min_data_rate: int
    session_deadline: float
    connection_count_limit: int
    connection_rate_limit: int
    auth_rate_limit: int
    upstream_proxy: bool  # smtpd_upstream_proxy_protocol = haproxy
    shutdown_timeout: float  # ours: `mailgate stop` lets sessions finish this long
    upstream_proxy_timeout: float
    new_tls_session_rate_limit: int
    rate_time_unit: float
    message_rate_limit: int  # smtpd_client_message_rate_limit
    recipient_rate_limit: int  # smtpd_client_recipient_rate_limit
    rate_window_sliding: bool  # anvil_rate_window = sliding (ours)
    site_count_cache: float  # redis_count_cache_time (ours): trusting a site-wide count
    client_ipv4_prefix_length: int  # Postfix 3.8's smtpd_client_ipv4_prefix_length
    client_ipv6_prefix_length: int  # and smtpd_client_ipv6_prefix_length
    max_connections: int
    soft_error_limit: int
    hard_error_limit: int
    error_sleep_time: float
    error_sleep_growth: float
    error_sleep_max: float
    junk_command_limit: int
    helo_required: bool
    disable_vrfy: bool
    noop_commands: frozenset[str]
    forbidden_commands: tuple[str, ...]
    forbid_bare_newline: str  # no, normalize or reject (`yes` is read as normalize)
    bare_newline_reject_code: int
    forbid_unauth_pipelining: bool
    discard_ehlo_keywords: frozenset[str]
    client_port_logging: bool
    peername_lookup: bool
    smtputf8_enable: bool
    strict_rfc821_envelopes: bool
    enable_help: bool
    delay_reject: bool
    soft_bounce: bool
    ipv6: bool
    tls: TlsSettings
    sasl: SaslSettings

    @property
    def smtputf8_offered(self) -> bool:
        """SMTPUTF8 is announced, so MAIL's and VRFY's SMTPUTF8 parameter is honoured:
        smtputf8_enable, and not in smtpd_discard_ehlo_keywords."""
        return self.smtputf8_enable and "SMTPUTF8" not in self.discard_ehlo_keywords

    @property
    def anvil(self) -> bool:
        """Some client limit is set: smtpd counts clients in anvil (Postfix's smtpd makes
        its anvil client only then; the count limit's default 50 is one)."""
        return bool(self.connection_count_limit or self.connection_rate_limit
                    or self.message_rate_limit or self.recipient_rate_limit
                    or self.new_tls_session_rate_limit or self.auth_rate_limit)

    @classmethod
    def from_config(cls, cfg: Config) -> SmtpdSettings:
        raw = cfg.get_str("smtpd_forbid_bare_newline")
        bare = _BARE_NEWLINE.get(raw.lower())
        if bare is None:  # Postfix 3.7.11: fatal: bad parameter value: 'NAME = VALUE'
            raise ConfigError(f"{cfg.origin('smtpd_forbid_bare_newline')}: bad parameter "
                              f"value: 'smtpd_forbid_bare_newline = {raw}'")
        return cls(
            myhostname=cfg.get_str("myhostname"),
            mail_name=cfg.get_str("mail_name"),
            banner=cfg.get_str("smtpd_banner"),
            syslog_name=cfg.get_str("syslog_name"),
            listen=parse_listen(cfg.get_list("smtpd_listen"), cfg.origin("smtpd_listen")),
            line_length_limit=cfg.get_int("line_length_limit"),
            message_size_limit=cfg.get_size("message_size_limit"),
            header_size_limit=cfg.get_int("header_size_limit"),
            queue_minfree=cfg.get_size("queue_minfree"),
            recipient_limit=cfg.get_int("smtpd_recipient_limit"),
            recipient_overshoot_limit=cfg.get_int("smtpd_recipient_overshoot_limit"),
            timeout=cfg.get_time("smtpd_timeout"),
            per_request_deadline=cfg.get_bool("smtpd_per_request_deadline"),
            min_data_rate=cfg.get_int("smtpd_min_data_rate"),
            session_deadline=cfg.get_time("smtpd_session_deadline"),
            connection_count_limit=cfg.get_int("smtpd_client_connection_count_limit"),
            connection_rate_limit=cfg.get_int("smtpd_client_connection_rate_limit"),
            auth_rate_limit=cfg.get_int("smtpd_client_auth_rate_limit"),
            upstream_proxy=_proxy_protocol(cfg),
            shutdown_timeout=cfg.get_time("smtpd_shutdown_timeout"),
            upstream_proxy_timeout=cfg.get_time("smtpd_upstream_proxy_timeout"),
            new_tls_session_rate_limit=cfg.get_int("smtpd_client_new_tls_session_rate_limit"),
            rate_time_unit=cfg.get_time("anvil_rate_time_unit"),
            message_rate_limit=cfg.get_int("smtpd_client_message_rate_limit"),
            recipient_rate_limit=cfg.get_int("smtpd_client_recipient_rate_limit"),
            rate_window_sliding=_rate_window(cfg),
            site_count_cache=cfg.get_time("redis_count_cache_time"),
            client_ipv4_prefix_length=cfg.get_int("smtpd_client_ipv4_prefix_length"),
            client_ipv6_prefix_length=cfg.get_int("smtpd_client_ipv6_prefix_length"),
            max_connections=cfg.get_int("smtpd_max_connections"),
            soft_error_limit=cfg.get_int("smtpd_soft_error_limit"),
            hard_error_limit=cfg.get_int("smtpd_hard_error_limit"),
            error_sleep_time=cfg.get_time("smtpd_error_sleep_time"),
            error_sleep_growth=cfg.get_time("smtpd_error_sleep_growth"),
            error_sleep_max=cfg.get_time("smtpd_error_sleep_max"),
            junk_command_limit=cfg.get_int("smtpd_junk_command_limit"),
            helo_required=cfg.get_bool("smtpd_helo_required"),
            disable_vrfy=cfg.get_bool("disable_vrfy_command"),
            noop_commands=frozenset(c.upper() for c in cfg.get_list("smtpd_noop_commands")),
            forbidden_commands=cfg.get_list("smtpd_forbidden_commands"),
            forbid_bare_newline=bare,
            bare_newline_reject_code=cfg.get_int("smtpd_forbid_bare_newline_reject_code"),
            forbid_unauth_pipelining=cfg.get_bool("smtpd_forbid_unauth_pipelining"),
            discard_ehlo_keywords=frozenset(
                k.upper() for k in cfg.get_list("smtpd_discard_ehlo_keywords")),
            client_port_logging=cfg.get_bool("smtpd_client_port_logging"),
            peername_lookup=cfg.get_bool("smtpd_peername_lookup"),
            smtputf8_enable=cfg.get_bool("smtputf8_enable"),
            strict_rfc821_envelopes=cfg.get_bool("strict_rfc821_envelopes"),
            enable_help=cfg.get_bool("smtpd_enable_help"),
            delay_reject=cfg.get_bool("smtpd_delay_reject"),
            soft_bounce=cfg.get_bool("soft_bounce"),
            ipv6=any(p.lower() in ("all", "ipv6") for p in cfg.get_list("inet_protocols")),
            tls=TlsSettings.from_config(cfg),
            sasl=SaslSettings.from_config(cfg),
        )


def _rate_window(cfg: Config) -> bool:
    """anvil_rate_window (ours): `fixed` (anvil's windows) or `sliding`."""
    value = cfg.get_str("anvil_rate_window").lower()
    if value not in ("fixed", "sliding"):
        raise ConfigError(f"{cfg.origin('anvil_rate_window')}: bad parameter value: "
                          f"'anvil_rate_window = {value}' (use fixed or sliding)")
    return value == "sliding"


def _proxy_protocol(cfg: Config) -> bool:
    """smtpd_upstream_proxy_protocol: empty or `haproxy` (Postfix: fatal otherwise)."""
    value = cfg.get_str("smtpd_upstream_proxy_protocol").lower()
    if value not in ("", "haproxy"):
        raise ConfigError(f"{cfg.origin('smtpd_upstream_proxy_protocol')}: unsupported "
                          f"smtpd_upstream_proxy_protocol: {value} (use haproxy, or nothing)")
    return value == "haproxy"


_TLS_LEVELS = ("none", "may", "encrypt")


@dataclass(frozen=True, slots=True)
class SaslSettings:
    """SMTP AUTH (Postfix 3.7 names); `enabled` only with smtpd_sasl_auth_enable = yes.
    The security options stay words here: the SASL layer parses them (a ConfigError at
    start-up when one is unknown)."""

    enabled: bool
    path: str
    security_options: tuple[str, ...]
    tls_security_options: tuple[str, ...]
    exceptions_networks: tuple[str, ...]
    authenticated_header: bool
    response_limit: int
    broken_clients: bool

    @classmethod
    def from_config(cls, cfg: Config) -> SaslSettings:
        enabled = cfg.get_bool("smtpd_sasl_auth_enable")
        kind = cfg.get_str("smtpd_sasl_type").lower()
        if enabled and kind != "dovecot":  # Postfix: "unsupported SASL server implementation"
            raise ConfigError(f"{cfg.origin('smtpd_sasl_type')}: unsupported SASL server "
                              f"implementation: {kind} (mailgate speaks to Dovecot only: "
                              "smtpd_sasl_type = dovecot)")
        return cls(
            enabled=enabled, path=cfg.get_str("smtpd_sasl_path"),
            security_options=cfg.get_list("smtpd_sasl_security_options"),
            tls_security_options=cfg.get_list("smtpd_sasl_tls_security_options"),
            exceptions_networks=cfg.get_list("smtpd_sasl_exceptions_networks"),
            authenticated_header=cfg.get_bool("smtpd_sasl_authenticated_header"),
            response_limit=cfg.get_int("smtpd_sasl_response_limit"),
            broken_clients=cfg.get_bool("broken_sasl_auth_clients"))


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """smtpd's TLS parameters (Postfix 3.7 names); `level` resolved as smtpd does."""

    level: str  # none, may, encrypt
    wrappermode: bool
    cert_files: tuple[tuple[str, str, str], ...]  # (certificate, key, origin) in order
    chain_files: tuple[str, ...]
    ca_file: str
    ca_path: str
    protocols: str
    ciphers: str  # the OpenSSL cipher list for the grade in force, exclusions applied
    auth_only: bool
    received_header: bool
    loglevel: int
    ask_ccert: bool
    req_ccert: bool
    fingerprint_digest: str
    starttls_timeout: float
    preempt_cipherlist: bool
    session_cache_timeout: float  # the life of a session-ticket key (0: no tickets)
    origin: str  # where the level comes from (start-up errors name it)

    @property
    def enabled(self) -> bool:
        """A TLS context is needed: STARTTLS offered, or wrapper mode."""
        return self.level != "none" or self.wrappermode

    @classmethod
    def from_config(cls, cfg: Config) -> TlsSettings:
        level = cfg.get_str("smtpd_tls_security_level").lower()
        origin = cfg.origin("smtpd_tls_security_level")
        if not level:  # Postfix's backwards-compatible parameters
            enforce = cfg.get_bool("smtpd_enforce_tls")
            level = "encrypt" if enforce else "may" if cfg.get_bool("smtpd_use_tls") else "none"
            origin = cfg.origin("smtpd_enforce_tls" if enforce else "smtpd_use_tls")
        if level not in _TLS_LEVELS:
            raise ConfigError(f"{origin}: invalid TLS security level: "
                              f"\"smtpd_tls_security_level = {level}\" (use none, may or "
                              "encrypt)")
        mandatory = level == "encrypt"
        grade = cfg.get_str("smtpd_tls_mandatory_ciphers" if mandatory else
                            "smtpd_tls_ciphers").lower()
        if grade not in ("high", "medium", "low", "null"):
            name = "smtpd_tls_mandatory_ciphers" if mandatory else "smtpd_tls_ciphers"
            raise ConfigError(f"{cfg.origin(name)}: invalid cipher grade: {grade}")
        ciphers = cfg.get_str(f"tls_{grade}_cipherlist")
        exclude = cfg.get_list("smtpd_tls_mandatory_exclude_ciphers" if mandatory else
                               "smtpd_tls_exclude_ciphers")
        ciphers += "".join(f":!{item}" for item in exclude)
        certs = []
        for cert, key in (("smtpd_tls_cert_file", "smtpd_tls_key_file"),
                          ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
                          ("smtpd_tls_dcert_file", "smtpd_tls_dkey_file")):
            if cfg.get_str(cert):
                certs.append((cfg.get_str(cert), cfg.get_str(key) or cfg.get_str(cert),
                              cfg.origin(cert)))
        return cls(
            level=level, wrappermode=cfg.get_bool("smtpd_tls_wrappermode"),
            cert_files=tuple(certs), chain_files=cfg.get_list("smtpd_tls_chain_files"),
            ca_file=cfg.get_str("smtpd_tls_CAfile"), ca_path=cfg.get_str("smtpd_tls_CApath"),
            protocols=cfg.get_str("smtpd_tls_mandatory_protocols" if mandatory else
                                  "smtpd_tls_protocols"),
            ciphers=ciphers,
            auth_only=mandatory or cfg.get_bool("smtpd_tls_auth_only"),
            received_header=cfg.get_bool("smtpd_tls_received_header"),
            loglevel=cfg.get_int("smtpd_tls_loglevel"),
            ask_ccert=cfg.get_bool("smtpd_tls_ask_ccert") or cfg.get_bool("smtpd_tls_req_ccert"),
            req_ccert=cfg.get_bool("smtpd_tls_req_ccert"),
            fingerprint_digest=cfg.get_str("smtpd_tls_fingerprint_digest").lower(),
            starttls_timeout=cfg.get_time("smtpd_starttls_timeout"),
            preempt_cipherlist=cfg.get_bool("tls_preempt_cipherlist"),
            session_cache_timeout=cfg.get_time("smtpd_tls_session_cache_timeout"),
            origin=origin,
        )


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """What the queue manager and the Maildir agents need."""

    myhostname: str
    queue_directory: str
    virtual_mailbox_base: str
    home_mailbox: str
    recipient_delimiter: str
    queue_run_delay: float
    minimal_backoff_time: float
    maximal_backoff_time: float
    concurrency: int
    enable_original_recipient: bool
    defer_transports: frozenset[str]
    soft_bounce: bool = False
    maximal_queue_lifetime: float = 5 * 86400.0
    delay_warning_time: float = 0.0
    bounce_queue_lifetime: float = 5 * 86400.0
    mail_name: str = "mailgate"
    myorigin: str = ""
    double_bounce_sender: str = "double-bounce"
    notice_recipient: str = "postmaster"  # 2bounce_notice_recipient
    destination_concurrency: int = 20
    destination_recipients: int = 50
    smtp_tls: bool = True  # smtp_tls_security_level = may
    smtp_timeouts: tuple[float, ...] = (30.0, 300.0, 300.0, 300.0, 120.0, 180.0, 600.0)
    smtp_line_length_limit: int = 998  # longer lines are folded when relayed (0: never)
    lmtp_line_length_limit: int = 998
    direct_delivery: bool = True  # smtpd_direct_delivery (decision 0047)

    @classmethod
    def from_config(cls, cfg: Config) -> DeliverySettings:
        home = cfg.get_str("home_mailbox")
        if home and not home.endswith("/"):
            raise ConfigError(f"{cfg.origin('home_mailbox')}: home_mailbox = {home}: only "
                              "Maildir delivery (a value ending in '/') is supported")
        return cls(
            myhostname=cfg.get_str("myhostname"),
            queue_directory=cfg.get_str("queue_directory"),
            virtual_mailbox_base=cfg.get_str("virtual_mailbox_base"),
            home_mailbox=home,
            recipient_delimiter=cfg.get_str("recipient_delimiter"),
            queue_run_delay=cfg.get_time("queue_run_delay"),
            minimal_backoff_time=cfg.get_time("minimal_backoff_time"),
            maximal_backoff_time=cfg.get_time("maximal_backoff_time"),
            concurrency=cfg.get_int("delivery_concurrency"),
            enable_original_recipient=cfg.get_bool("enable_original_recipient"),
            defer_transports=frozenset(cfg.get_list("defer_transports")),
            soft_bounce=cfg.get_bool("soft_bounce"),
            maximal_queue_lifetime=cfg.get_time("maximal_queue_lifetime"),
            delay_warning_time=cfg.get_time("delay_warning_time"),
            bounce_queue_lifetime=cfg.get_time("bounce_queue_lifetime"),
            mail_name=cfg.get_str("mail_name"),
            myorigin=cfg.get_str("myorigin"),
            double_bounce_sender=cfg.get_str("double_bounce_sender"),
            notice_recipient=cfg.get_str("2bounce_notice_recipient"),
            destination_concurrency=cfg.get_int("default_destination_concurrency_limit"),
            destination_recipients=cfg.get_int("default_destination_recipient_limit"),
            smtp_tls=cfg.get_str("smtp_tls_security_level") not in ("", "none"),
            smtp_timeouts=tuple(cfg.get_time(f"smtp_{name}_timeout") for name in (
                "connect", "helo", "mail", "rcpt", "data_init", "data_xfer", "data_done")),
            smtp_line_length_limit=cfg.get_int("smtp_line_length_limit"),
            lmtp_line_length_limit=cfg.get_int("lmtp_line_length_limit"),
            direct_delivery=cfg.get_bool("smtpd_direct_delivery"),
        )
