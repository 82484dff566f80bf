"""The declarative table of main.cf parameters: name, type, Postfix 3.7 default, bounds."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """How a parameter's expanded text is converted (Postfix's mail_conf_{str,int,bool,time,...})."""

    STR = "str"
    INT = "int"
    BOOL = "bool"
    TIME = "time"  # a number with an optional unit s/m/h/d/w; the default unit is per parameter
    SIZE = "size"  # a byte count (Postfix's long)
    LIST = "list"  # commas and/or whitespace separated, {} protects an element


@dataclass(frozen=True, slots=True)
class Param:
    """One main.cf parameter: its Postfix name, type, built-in default (unexpanded) and bounds."""

    name: str
    kind: Kind
    default: str
    min: int | None = None
    max: int | None = None
    unit: str = "s"  # default time unit (Postfix: the default's suffix decides)
    extension: bool = False  # a mailgate parameter that Postfix does not have


_S, _I, _B, _T, _Z, _L = Kind.STR, Kind.INT, Kind.BOOL, Kind.TIME, Kind.SIZE, Kind.LIST

_PDMS = (
    "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
    "qmqpd_authorized_clients,relay_domains,smtpd_access_maps"
)

PARAMETERS: tuple[Param, ...] = (
    # --- identity and addressing
    Param("compatibility_level", _S, "3.7"),
    Param("mail_name", _S, "mailgate"),
    Param("mail_version", _S, "0.1.0"),
    Param("mail_owner", _S, "postfix"),  # started as root: who serves clients (decision 0059)
    Param("myhostname", _S, ""),  # filled in from the system at start-up
    Param("mydomain", _S, "localdomain"),  # filled in from $myhostname at start-up
    Param("myorigin", _S, "$myhostname"),
    Param("mydestination", _L, "$myhostname, localhost.$mydomain, localhost"),
    Param("mynetworks", _L, ""),  # empty: derived from mynetworks_style
    Param("mynetworks_style", _S, "host"),
    Param("inet_interfaces", _L, "all"),
    Param("inet_protocols", _L, "all"),
    Param("proxy_interfaces", _L, ""),
    Param("relay_domains", _L, ""),
    Param("relayhost", _S, ""),
    Param("recipient_delimiter", _S, ""),
    Param("parent_domain_matches_subdomains", _L, _PDMS),
    Param("allow_untrusted_routing", _B, "no"),
    Param("swap_bangpath", _B, "yes"),
    Param("allow_percent_hack", _B, "yes"),
    Param("append_at_myorigin", _B, "yes"),
    Param("append_dot_mydomain", _B, "no"),
    Param("resolve_dequoted_address", _B, "yes"),
    Param("resolve_null_domain", _B, "no"),
    Param("resolve_numeric_domain", _B, "no"),
    Param("strict_rfc821_envelopes", _B, "no"),
    Param("smtputf8_enable", _B, "${{$compatibility_level} <level {1} ? {no} : {yes}}"),
    Param("enable_idna2003_compatibility", _B, "no"),
    Param("soft_bounce", _B, "no"),
    Param("stress", _S, ""),
    # --- mailgate's own paths and listeners (extensions)
    Param("smtpd_listen", _L, "127.0.0.1:2525", extension=True),
    Param("mailgate_home", _S, "./mailgate-data", extension=True),
    Param("queue_directory", _S, "$mailgate_home/queue"),
    Param("data_directory", _S, "$mailgate_home/data"),
    # client state shared by the workers (greylisting, blocks, postscreen cache): decision 0061
    Param("state_database", _S, "$data_directory/state.db", extension=True),
    # client state in Redis for several gateways (decision 0066); none named: state_database
    Param("redis_servers", _L, "", extension=True),
    Param("redis_sentinels", _L, "", extension=True),
    Param("redis_sentinel_master", _S, "", extension=True),
    Param("redis_cluster", _B, "no", extension=True),
    Param("redis_password_file", _S, "", extension=True),
    Param("redis_username", _S, "", extension=True),
    Param("redis_tls", _B, "no", extension=True),
    Param("redis_timeout", _T, "0.05s", extension=True),
    Param("redis_key_prefix", _S, "mailgate:", extension=True),
    Param("redis_failure_action", _S, "fail_open", extension=True),
    # how long a gateway trusts a site-wide anvil count it read back (0: ask every time)
    Param("redis_count_cache_time", _T, "0.1s", extension=True),
    Param("syslog_name", _S, "mailgate"),
    Param("maillog_file", _S, ""),
    Param("syslog_facility", _S, "mail"),
    Param("syslog_socket", _S, "/dev/log"),  # ours: where the system logger listens
    # the transaction journal that `mailgate replay` reads (empty: off; decision 0067)
    Param("transaction_journal", _S, "", extension=True),
    Param("transaction_journal_size_limit", _Z, "1073741824", min=0, extension=True),
    Param("smtpd_max_connections", _I, "2000", min=1, extension=True),
    Param("smtpd_processes", _I, "0", min=0, extension=True),  # 0: serve.default_workers
    Param("smtpd_accept_process", _B, "yes", extension=True),  # decision 0049
    Param("smtpd_enable_help", _B, "no", extension=True),
    # --- local and virtual delivery
    Param("virtual_mailbox_domains", _L, "$virtual_mailbox_maps"),
    Param("virtual_mailbox_maps", _L, ""),
    Param("virtual_mailbox_base", _S, "$mailgate_home/mail"),
    Param("virtual_uid_maps", _L, ""),
    Param("virtual_gid_maps", _L, ""),
    Param("virtual_minimum_uid", _I, "100", min=1),
    Param("defer_transports", _L, ""),
    Param("virtual_alias_domains", _L, "$virtual_alias_maps"),
    Param("virtual_alias_maps", _L, "$virtual_maps"),
    Param("virtual_maps", _L, ""),
    Param("local_recipient_maps", _L, "proxy:unix:passwd.byname $alias_maps"),
    Param("alias_maps", _L, ""),
    Param("home_mailbox", _S, "Maildir/"),
    Param("relay_recipient_maps", _L, ""),
    Param("canonical_maps", _L, ""),
    Param("fast_flush_domains", _L, "$relay_domains"),
    Param("sender_canonical_maps", _L, ""),
    Param("recipient_canonical_maps", _L, ""),
    Param("double_bounce_sender", _S, "double-bounce"),
    Param("smtpd_expansion_filter", _S,
          "\\t\\40!\"#$$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_"
          "`abcdefghijklmnopqrstuvwxyz{|}~"),
    Param("enable_original_recipient", _B, "yes"),
    Param("always_add_missing_headers", _B, "no"),
    Param("local_header_rewrite_clients", _L, "permit_inet_interfaces"),
    # --- SMTP server limits
    Param("smtpd_banner", _S, "$myhostname ESMTP $mail_name"),
    Param("line_length_limit", _I, "2048", min=1),
    Param("message_size_limit", _Z, "10240000", min=0),
    Param("header_size_limit", _I, "102400", min=1),
    Param("smtpd_recipient_limit", _I, "1000", min=1),
    Param("smtpd_recipient_overshoot_limit", _I, "1000", min=0),
    Param("smtpd_timeout", _T, "${stress?{10}:{300}}s", min=1),
    Param("smtpd_per_request_deadline", _B, "${smtpd_per_record_deadline?"
          "{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}"),
    Param("smtpd_min_data_rate", _I, "500", min=1),
    Param("smtpd_session_deadline", _T, "3600s", min=0, extension=True),
    Param("smtpd_client_connection_count_limit", _I, "50", min=0),
    Param("smtpd_client_connection_rate_limit", _I, "0", min=0),
    Param("smtpd_client_message_rate_limit", _I, "0", min=0),
    Param("smtpd_client_recipient_rate_limit", _I, "0", min=0),
    Param("smtpd_client_auth_rate_limit", _I, "0", min=0),
    Param("smtpd_upstream_proxy_protocol", _S, ""),
    Param("smtpd_shutdown_timeout", _T, "60s", min=0),  # ours: how long stop lets sessions end
    Param("smtpd_upstream_proxy_timeout", _T, "5s", min=1),
    Param("smtpd_client_new_tls_session_rate_limit", _I, "0", min=0),
    Param("smtpd_client_event_limit_exceptions",
          _L, "${smtpd_client_connection_limit_exceptions:$mynetworks}"),
    Param("smtpd_client_connection_limit_exceptions", _L, ""),
    Param("anvil_rate_time_unit", _T, "60s", min=1),
    Param("anvil_status_update_time", _T, "600s", min=1),
    Param("anvil_rate_window", _S, "fixed", extension=True),  # ours: fixed | sliding
    # Postfix 3.8's names and defaults (not in 3.7): anvil counts a client's network
    Param("smtpd_client_ipv4_prefix_length", _I, "32", min=0, max=32, extension=True),
    Param("smtpd_client_ipv6_prefix_length", _I, "84", min=0, max=128, extension=True),
    Param("smtpd_soft_error_limit", _I, "10", min=0),
    Param("smtpd_hard_error_limit", _I, "${stress?{1}:{20}}", min=1),
    Param("smtpd_error_sleep_time", _T, "1s", min=0),
    Param("smtpd_junk_command_limit", _I, "${stress?{1}:{100}}", min=1),
    Param("smtpd_error_sleep_growth", _T, "0s", min=0, extension=True),
    Param("smtpd_error_sleep_max", _T, "30s", min=0, extension=True),
    Param("smtpd_helo_required", _B, "no"),
    Param("disable_vrfy_command", _B, "no"),
    Param("smtpd_noop_commands", _L, ""),
    Param("smtpd_forbidden_commands", _L, "CONNECT GET POST regexp:{{/^[^A-Z]/ Thrash}}"),
    Param("smtpd_forbid_bare_newline", _S, "normalize"),
    Param("smtpd_forbid_bare_newline_exclusions", _L, "$mynetworks"),
    Param("smtpd_forbid_bare_newline_reject_code", _I, "550"),
    Param("smtpd_forbid_unauth_pipelining", _B, "no"),
    Param("smtpd_discard_ehlo_keywords", _L, ""),
    Param("smtpd_client_port_logging", _B, "no"),
    Param("smtpd_peername_lookup", _B, "yes"),
    Param("smtpd_delay_open_until_valid_rcpt", _B, "yes"),
    Param("smtpd_authorized_xclient_hosts", _L, ""),
    Param("smtpd_authorized_xforward_hosts", _L, ""),
    Param("smtpd_log_access_permit_actions", _L, ""),
    Param("smtpd_reject_footer", _S, ""),
    Param("queue_minfree", _Z, "0", min=0),
    # --- restriction lists (issue 4 uses them; here so pasted main.cf lines are known)
    Param("smtpd_client_restrictions", _L, ""),
    Param("smtpd_helo_restrictions", _L, ""),
    Param("smtpd_sender_restrictions", _L, ""),
    Param("smtpd_relay_restrictions", _L,
          "${{$compatibility_level} <level {1} ? {} : "
          "{permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}"),
    Param("smtpd_recipient_restrictions", _L, ""),
    Param("smtpd_data_restrictions", _L, ""),
    Param("smtpd_end_of_data_restrictions", _L, ""),
    Param("smtpd_etrn_restrictions", _L, ""),
    Param("smtpd_restriction_classes", _L, ""),
    Param("smtpd_delay_reject", _B, "yes"),
    Param("smtpd_relay_before_recipient_restrictions", _B,
          "${{$compatibility_level} <level {3.6} ? {no} : {yes}}"),
    Param("smtpd_reject_unlisted_recipient", _B, "yes"),
    Param("smtpd_reject_unlisted_sender", _B, "no"),
    Param("smtpd_null_access_lookup_key", _S, "<>"),
    Param("smtpd_sasl_auth_enable", _B, "no"),
    # --- SMTP AUTH (docs/sasl.md; only smtpd_sasl_type = dovecot is implemented)
    Param("smtpd_sasl_type", _S, "cyrus"),
    Param("smtpd_sasl_path", _S, "smtpd"),
    Param("smtpd_sasl_service", _S, "smtp"),
    Param("smtpd_sasl_security_options", _L, "noanonymous"),
    Param("smtpd_sasl_tls_security_options", _L, "$smtpd_sasl_security_options"),
    Param("smtpd_sasl_local_domain", _S, ""),
    Param("smtpd_sasl_exceptions_networks", _L, ""),
    Param("smtpd_sasl_authenticated_header", _B, "no"),
    Param("smtpd_sasl_response_limit", _I, "12288", min=1),
    Param("smtpd_sasl_mechanism_filter", _L, "!external, static:rest"),
    Param("broken_sasl_auth_clients", _B, "no"),
    Param("smtpd_sender_login_maps", _L, ""),
    Param("smtpd_policy_service_default_action", _S, "451 4.3.5 Server configuration problem"),
    Param("smtpd_policy_service_max_idle", _T, "300s", min=1),
    Param("smtpd_policy_service_max_ttl", _T, "1000s", min=1),
    Param("smtpd_policy_service_timeout", _T, "100s", min=1),
    Param("smtpd_policy_service_try_limit", _I, "2", min=1),
    Param("smtpd_policy_service_retry_delay", _T, "1s", min=1),
    Param("smtpd_policy_service_request_limit", _I, "0", min=0),
    Param("smtpd_policy_service_policy_context", _S, ""),
    # --- reply codes
    Param("access_map_reject_code", _I, "554"),
    Param("access_map_defer_code", _I, "450"),
    Param("reject_code", _I, "554"),
    Param("defer_code", _I, "450"),
    Param("relay_domains_reject_code", _I, "554"),
    Param("maps_rbl_reject_code", _I, "554"),
    Param("unknown_client_reject_code", _I, "450"),
    Param("invalid_hostname_reject_code", _I, "501"),
    Param("unknown_hostname_reject_code", _I, "450"),
    Param("unknown_address_reject_code", _I, "450"),
    Param("non_fqdn_reject_code", _I, "504"),
    Param("multi_recipient_bounce_reject_code", _I, "550"),
    Param("unknown_local_recipient_reject_code", _I, "550"),
    Param("unknown_relay_recipient_reject_code", _I, "550"),
    Param("unknown_virtual_alias_reject_code", _I, "550"),
    Param("unknown_virtual_mailbox_reject_code", _I, "550"),
    Param("plaintext_reject_code", _I, "450"),
    Param("show_user_unknown_table_name", _B, "yes"),
    Param("reject_tempfail_action", _S, "defer_if_permit"),
    Param("unknown_address_tempfail_action", _S, "$reject_tempfail_action"),
    Param("unknown_helo_hostname_tempfail_action", _S, "$reject_tempfail_action"),
    Param("unverified_recipient_tempfail_action", _S, "$reject_tempfail_action"),
    Param("unverified_sender_tempfail_action", _S, "$reject_tempfail_action"),
    Param("default_rbl_reply", _S,
          "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
          "$rbl_domain${rbl_reason?; $rbl_reason}"),
    Param("rbl_reply_maps", _L, ""),
    Param("smtpd_dns_reply_filter", _S, ""),
    Param("disable_dns_lookups", _B, "no"),
    Param("smtp_host_lookup", _L, "dns"),
    Param("permit_mx_backup_networks", _L, ""),
    Param("maps_rbl_domains", _L, ""),
    # --- DNS resolver (mailgate): empty servers = /etc/resolv.conf
    Param("resolver_servers", _L, "", extension=True),
    Param("resolver_timeout", _T, "5s", min=1, extension=True),
    Param("resolver_concurrency", _I, "1000", min=1, extension=True),
    Param("resolver_cache_size", _I, "100000", min=0, extension=True),
    Param("resolver_hosts_file", _S, "/etc/hosts", extension=True),
    # --- weighted DNS blocklist scoring (mailgate: restriction reject_dnsbl_score)
    Param("smtpd_dnsbl_sites", _L, "", extension=True),
    Param("smtpd_dnsbl_threshold", _I, "1", extension=True),
    Param("smtpd_dnsbl_reply", _S, "", extension=True),
    # --- postscreen (a master.cf `postscreen` line; in the worker: docs/postscreen.md)
    Param("postscreen_access_list", _L, "permit_mynetworks"),
    Param("postscreen_allowlist_interfaces", _L, "${postscreen_whitelist_interfaces?"
          "{$postscreen_whitelist_interfaces}:{static:all}}"),
    Param("postscreen_denylist_action", _S, "${postscreen_blacklist_action?"
          "{$postscreen_blacklist_action}:{ignore}}"),
    Param("postscreen_greet_banner", _S, "$smtpd_banner"),
    Param("postscreen_greet_wait", _T, "${stress?{2}:{6}}s", min=1),
    Param("postscreen_greet_action", _S, "ignore"),
    Param("postscreen_greet_ttl", _T, "1d", min=1, unit="d"),
    Param("postscreen_dnsbl_sites", _L, ""),
    Param("postscreen_dnsbl_threshold", _I, "1"),
    Param("postscreen_dnsbl_allowlist_threshold", _I, "${postscreen_dnsbl_whitelist_threshold?"
          "{$postscreen_dnsbl_whitelist_threshold}:{0}}"),
    Param("postscreen_dnsbl_action", _S, "ignore"),
    Param("postscreen_dnsbl_reply_map", _S, ""),
    Param("postscreen_dnsbl_min_ttl", _T, "60s", min=1),
    Param("postscreen_dnsbl_max_ttl", _T, "${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h",
          min=1, unit="h"),
    Param("postscreen_dnsbl_timeout", _T, "10s", min=1),
    Param("postscreen_pipelining_enable", _B, "no"),
    Param("postscreen_pipelining_action", _S, "enforce"),
    Param("postscreen_pipelining_ttl", _T, "30d", min=1, unit="d"),
    Param("postscreen_non_smtp_command_enable", _B, "no"),
    Param("postscreen_non_smtp_command_action", _S, "drop"),
    Param("postscreen_non_smtp_command_ttl", _T, "30d", min=1, unit="d"),
    Param("postscreen_bare_newline_enable", _B, "no"),
    Param("postscreen_bare_newline_action", _S, "ignore"),
    Param("postscreen_bare_newline_ttl", _T, "30d", min=1, unit="d"),
    Param("postscreen_forbidden_commands", _L, "$smtpd_forbidden_commands"),
    Param("postscreen_cache_map", _S, "btree:$data_directory/postscreen_cache"),
    Param("postscreen_cache_retention_time", _T, "7d", min=1, unit="d"),
    Param("postscreen_cache_cleanup_interval", _T, "12h", min=0, unit="h"),
    Param("postscreen_command_count_limit", _I, "20", min=1),
    Param("postscreen_command_time_limit", _T, "${stress?{10}:{300}}s", min=1),
    Param("postscreen_command_filter", _S, ""),
    Param("postscreen_watchdog_timeout", _T, "10s", min=10),
    Param("postscreen_client_connection_count_limit", _I, "$smtpd_client_connection_count_limit",
          min=0),
    Param("postscreen_pre_queue_limit", _I, "$default_process_limit", min=0),
    Param("postscreen_post_queue_limit", _I, "$default_process_limit", min=0),
    Param("postscreen_upstream_proxy_protocol", _S, ""),
    Param("postscreen_upstream_proxy_timeout", _T, "5s", min=1),
    Param("postscreen_disable_vrfy_command", _B, "$disable_vrfy_command"),
    Param("postscreen_helo_required", _B, "$smtpd_helo_required"),
    Param("postscreen_discard_ehlo_keywords", _L, "$smtpd_discard_ehlo_keywords"),
    Param("postscreen_discard_ehlo_keyword_address_maps", _L, ""),
    Param("postscreen_expansion_filter", _S, "$smtpd_expansion_filter"),
    Param("postscreen_reject_footer", _S, "$smtpd_reject_footer"),
    Param("postscreen_reject_footer_maps", _L, ""),
    Param("postscreen_tls_security_level", _S, "$smtpd_tls_security_level"),
    Param("postscreen_use_tls", _B, "$smtpd_use_tls"),
    Param("postscreen_enforce_tls", _B, "$smtpd_enforce_tls"),
    Param("respectful_logging", _B, "${{$compatibility_level} <level {3.6} ? {no} : {yes}}"),
    Param("smtpd_service_name", _S, "smtpd"),  # the `pass` service postscreen hands clients to
    Param("dnsblog_service_name", _S, "dnsblog"),
    Param("dnsblog_reply_delay", _T, "0s", min=0),
    Param("tlsproxy_service_name", _S, "tlsproxy"),
    # --- policy delegation: Postfix's process limit caps a service's connections per worker
    Param("default_process_limit", _I, "100", min=1),
    # --- mailgate policyd (the policy server)
    Param("policyd_listen", _L, "127.0.0.1:10040", extension=True),
    Param("policyd_restrictions", _L, "", extension=True),
    Param("policyd_default_action", _S, "DUNNO", extension=True),
    Param("policyd_reply_deadline", _T, "10s", min=1, extension=True),
    Param("policyd_client_state_ttl", _T, "300s", min=1, extension=True),
    Param("policyd_client_state_size", _I, "262144", min=1, extension=True),
    Param("policyd_processes", _I, "0", min=0, extension=True),  # 0: one per CPU
    # --- greylisting (restriction check_greylist; postgrey 1.37's defaults): decision 0063
    Param("greylist_delay", _T, "300s", min=1, extension=True),
    Param("greylist_max_age", _T, "35d", min=1, unit="d", extension=True),
    Param("greylist_retry_window", _T, "2d", min=1, unit="d", extension=True),
    Param("greylist_auto_allowlist_clients", _I, "5", min=0, extension=True),  # 0: off
    Param("greylist_allowlist_clients", _L, "", extension=True),  # postgrey's file formats
    Param("greylist_allowlist_recipients", _L, "", extension=True),
    Param("greylist_ipv4_prefix_length", _I, "24", min=1, max=32, extension=True),
    Param("greylist_ipv6_prefix_length", _I, "64", min=1, max=128, extension=True),
    Param("greylist_action", _S, "DEFER_IF_PERMIT", extension=True),
    Param("greylist_text", _S, "Greylisted, see http://postgrey.schweikert.ch/help/%r.html",
          extension=True),
    Param("greylist_dnswl_sites", _L, "", extension=True),  # clients never greylisted
    # --- automatic blocks of clients and networks with bad events (docs/blocks.md): 0064
    Param("auto_block_threshold", _I, "0", min=0, extension=True),  # bad events; 0: off
    Param("auto_block_window", _T, "1h", min=1, unit="h", extension=True),
    Param("auto_block_time", _T, "10m", min=1, unit="m", extension=True),  # first block
    Param("auto_block_max_time", _T, "1d", min=1, unit="d", extension=True),
    Param("auto_block_ipv4_prefix_length", _I, "24", min=1, max=32, extension=True),
    Param("auto_block_ipv6_prefix_length", _I, "64", min=1, max=128, extension=True),
    Param("auto_block_exceptions", _L, "$mynetworks", extension=True),
    # --- observability: Prometheus metrics over HTTP (empty: off)
    Param("metrics_listen", _L, "", extension=True),
    # --- queue manager and delivery
    Param("queue_run_delay", _T, "300s", min=1),
    Param("minimal_backoff_time", _T, "300s", min=1),
    Param("maximal_backoff_time", _T, "4000s", min=1),
    Param("maximal_queue_lifetime", _T, "5d", min=0, unit="d"),
    Param("bounce_queue_lifetime", _T, "5d", min=0, unit="d"),
    Param("delay_warning_time", _T, "0h", min=0, unit="h"),
    Param("default_destination_concurrency_limit", _I, "20", min=0),
    Param("default_destination_recipient_limit", _I, "50", min=1),
    Param("transport_maps", _L, ""),
    Param("default_transport", _S, "smtp"),
    Param("relay_transport", _S, "relay"),
    Param("local_transport", _S, "local:$myhostname"),
    Param("virtual_transport", _S, "virtual"),
    Param("delivery_concurrency", _I, "16", min=1, extension=True),
    Param("smtpd_direct_delivery", _B, "yes", extension=True),  # decision 0047
    Param("2bounce_notice_recipient", _S, "postmaster"),
    # --- smtpd TLS (Postfix 3.7 defaults; docs/tls.md says what Python's ssl maps)
    Param("smtpd_tls_security_level", _S, ""),
    Param("smtpd_use_tls", _B, "no"),
    Param("smtpd_enforce_tls", _B, "no"),
    Param("smtpd_tls_cert_file", _S, ""),
    Param("smtpd_tls_key_file", _S, "$smtpd_tls_cert_file"),
    Param("smtpd_tls_eccert_file", _S, ""),
    Param("smtpd_tls_eckey_file", _S, "$smtpd_tls_eccert_file"),
    Param("smtpd_tls_dcert_file", _S, ""),
    Param("smtpd_tls_dkey_file", _S, "$smtpd_tls_dcert_file"),
    Param("smtpd_tls_chain_files", _L, ""),
    Param("smtpd_tls_CAfile", _S, ""),
    Param("smtpd_tls_CApath", _S, ""),
    Param("smtpd_tls_protocols", _S, ">=TLSv1"),
    Param("smtpd_tls_mandatory_protocols", _S, ">=TLSv1"),
    Param("smtpd_tls_ciphers", _S, "medium"),
    Param("smtpd_tls_mandatory_ciphers", _S, "medium"),
    Param("smtpd_tls_exclude_ciphers", _L, ""),
    Param("smtpd_tls_mandatory_exclude_ciphers", _L, ""),
    Param("smtpd_tls_auth_only", _B, "no"),
    Param("smtpd_tls_wrappermode", _B, "no"),
    Param("smtpd_tls_received_header", _B, "no"),
    Param("smtpd_tls_loglevel", _I, "0", min=0),
    Param("smtpd_tls_ask_ccert", _B, "no"),
    Param("relay_clientcerts", _L, ""),
    Param("smtpd_tls_req_ccert", _B, "no"),
    Param("smtpd_tls_ccert_verifydepth", _I, "9", min=0),
    Param("smtpd_tls_fingerprint_digest", _S,
          "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}"),
    Param("smtpd_tls_session_cache_timeout", _T, "3600s", min=0),
    Param("smtpd_tls_session_cache_database", _S, ""),
    Param("smtpd_tls_always_issue_session_ids", _B, "yes"),
    Param("smtpd_tls_eecdh_grade", _S, "auto"),
    Param("smtpd_tls_dh1024_param_file", _S, ""),
    Param("smtpd_starttls_timeout", _T, "${stress?{10}:{300}}s", min=1),
    Param("tls_preempt_cipherlist", _B, "no"),
    Param("tls_high_cipherlist", _S, "aNULL:-aNULL:HIGH:@STRENGTH"),
    Param("tls_medium_cipherlist", _S, "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH"),
    Param("tls_low_cipherlist", _S, "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH"),
    Param("tls_null_cipherlist", _S, "eNULL:!aNULL"),
    Param("smtp_tls_security_level", _S, ""),
    Param("smtp_helo_name", _S, "$myhostname"),
    Param("smtp_connect_timeout", _T, "30s", min=0),
    Param("smtp_helo_timeout", _T, "300s", min=1),
    Param("smtp_mail_timeout", _T, "300s", min=1),
    Param("smtp_rcpt_timeout", _T, "300s", min=1),
    Param("smtp_data_init_timeout", _T, "120s", min=1),
    Param("smtp_data_xfer_timeout", _T, "180s", min=1),
    Param("smtp_data_done_timeout", _T, "600s", min=1),
    Param("smtp_line_length_limit", _I, "998", min=0),
    Param("lmtp_line_length_limit", _I, "998", min=0),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMETERS}
