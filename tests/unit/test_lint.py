"""`mailgate lint`: each mistake planted in a configuration is found at its file and line with
its code; clean configurations give no finding (open-relay: test_lint_relay.py, the command
line and the docs' configurations: test_lint_cli.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mailgate.maps.keycheck import key_problem, stale_tables
from support.lintcase import lint, write_config

MAIN = "main.cf"


def at(d: Path, line: int, code: str, name: str = MAIN) -> tuple[str, int, str]:
    return (str(d / name), line, code)


# --- tables --------------------------------------------------------------------------------

def test_wildcard_and_cidr_keys_in_indexed_and_texthash_tables(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_client_restrictions = check_client_access hash:DIR/access,
            check_client_access texthash:DIR/clients
        smtpd_sender_restrictions = check_sender_access inline:{ *@spam.example=REJECT }
        """, tables={"access": "# the article's advice\n200.123.*.* REJECT\n"
                               "192.0.2.0/24 REJECT\n198.51.100 REJECT fine\n",
                     "clients": "*.spam.example REJECT\n[2001:db8::]/32 REJECT\n"},
        postmap=("access",))
    result = lint(d)
    assert result.located() == {
        at(d, 2, "wildcard-key", "access"), at(d, 3, "cidr-key-in-hash", "access"),
        at(d, 1, "wildcard-key", "clients"), at(d, 2, "cidr-key-in-hash", "clients"),
        at(d, 3, "wildcard-key")}
    assert result.status == 1
    hints = {(f["line"], f["file"]): f["suggestion"] for f in result.findings}
    assert '"200.123"' in str(hints[(2, str(d / "access"))])
    assert '"200.123.0.0/16 REJECT"' in str(hints[(2, str(d / "access"))])
    assert '"192.0.2"' in str(hints[(3, str(d / "access"))])
    assert '"spam.example"' in str(hints[(3, str(d / MAIN))])


def test_key_problems_and_transport_catch_all() -> None:
    assert key_problem("*") is None  # transport(5)'s catch-all
    assert key_problem("200.123") is None
    assert key_problem("user@") is None
    wild = key_problem("user@*")
    assert wild is not None and '"user@"' in wild.suggestion
    net = key_problem("10.0.0.0/8")
    assert net is not None and net.code == "cidr-key-in-hash" and '"10"' in net.suggestion
    odd = key_problem("10.0.0.0/12")
    assert odd is not None and "octet" not in odd.suggestion
    assert key_problem("a/b") is None and key_problem("/etc/passwd") is None


def test_transport_table_star_key_is_fine(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "transport_maps = hash:DIR/transport\n",
                     tables={"transport": "* smtp:[relay.example]\n"}, postmap=("transport",))
    assert lint(d).findings == []


def test_stale_table_and_compiled_without_source(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_recipient_restrictions = reject_unauth_destination,
            check_sender_access hash:DIR/senders
        virtual_alias_maps = lmdb:DIR/virtual
        canonical_maps = hash:DIR/gone
        """, tables={"senders": "spam.example REJECT\n", "virtual": "a@x.example b@y.example\n",
                     "gone": "a b\n"}, postmap=("senders", "lmdb:virtual", "gone"))
    assert lint(d).findings == []
    os.utime(d / "senders", (2e9, 2e9))  # edited after postmap
    os.utime(d / "virtual.lmdb", (1e9, 1e9))
    (d / "gone").unlink()
    result = lint(d)
    assert result.located() == {at(d, 1, "stale-table"), at(d, 3, "stale-table"),
                                at(d, 4, "stale-table")}
    texts = " ".join(str(f["message"]) for f in result.findings)
    assert f"database {d}/senders.db is older than source file {d}/senders" in texts
    assert f"database {d}/gone.db has no source file {d}/gone" in texts
    assert f"mailgate postmap hash:{d}/senders" in str(result.of("stale-table")[0]["suggestion"])


def test_serve_warns_about_stale_tables_in_postfix_words(tmp_path: Path) -> None:
    from mailgate.config.config import Config

    d = write_config(tmp_path / "c", "smtpd_client_restrictions = hash:DIR/access\n",
                     master_cf="smtp inet n - n - - smtpd -o smtpd_helo_restrictions="
                               "check_helo_access,btree:DIR/helo\n".replace("DIR", str(
                                   tmp_path / "c")),
                     tables={"access": "a OK\n", "helo": "b OK\n"},
                     postmap=("access", "btree:helo"))
    cfg = Config.load(str(d))
    assert stale_tables(cfg) == []
    os.utime(d / "access", (2e9, 2e9))
    os.utime(d / "helo", (2e9, 2e9))
    assert stale_tables(cfg) == [
        f"database {d}/access.db is older than source file {d}/access",
        f"database {d}/helo.db is older than source file {d}/helo"]


def test_missing_table_only_where_a_restriction_names_it(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_client_restrictions = check_client_access hash:DIR/unbuilt
        smtpd_helo_restrictions = check_helo_access cidr:DIR/absent
        smtpd_sender_restrictions = check_sender_access mysql:DIR/senders.cf
        virtual_mailbox_maps = hash:DIR/nowhere
        """, tables={"unbuilt": "a OK\n"})
    result = lint(d)
    assert result.located() == {at(d, 1, "missing-table"), at(d, 2, "missing-table"),
                                at(d, 3, "missing-table")}
    hints = [str(f["suggestion"]) for f in result.findings]
    assert f'run "mailgate postmap hash:{d}/unbuilt"' in hints
    assert "unsupported dictionary type: mysql" in str(result.findings[2]["message"])


def test_regexp_patterns_meant_for_a_domain(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_sender_restrictions = check_sender_access regexp:DIR/senders,
            check_sender_access pcre:DIR/senders.pcre
        smtpd_helo_restrictions = check_helo_access regexp:{{/^friend.example$/ OK}}
        """, tables={
            "senders": "# spammers\n/example.com/ REJECT\n/@example\\.net$/ REJECT ok\n"
                       "/^[^@]+@[^.]+$/ REJECT no dot\nif /\\.example$/\n/^bad@/ REJECT\nendif\n",
            "senders.pcre": "/(^|\\.)example\\.org$/ REJECT ok\n/user@example\\.org$/ REJECT\n"})
    result = lint(d)
    assert result.located() == {at(d, 2, "regexp-unanchored", "senders"),
                                at(d, 2, "regexp-unanchored", "senders.pcre"),
                                at(d, 3, "regexp-unanchored")}
    first = result.of("regexp-unanchored")
    texts = {str(f["suggestion"]) for f in first}
    assert "write /(^|[.@])example\\.com$/" in texts
    assert "write /^user@example\\.org$/" in texts
    assert "write /^friend\\.example$/" in texts


# --- restriction lists ---------------------------------------------------------------------

def test_unreachable_restrictions(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_client_restrictions = permit_mynetworks, permit, reject_rbl_client x.example
        smtpd_helo_restrictions = reject_invalid_helo_hostname, reject, reject_non_fqdn_helo_hostname
        smtpd_sender_restrictions = warn_if_reject reject, reject_non_fqdn_sender
        smtpd_data_restrictions = reject_unauth_pipelining, warn_if_reject
        smtpd_etrn_restrictions = check_sender_access inline:{a=OK}
        """)
    result = lint(d)
    assert result.located() == {at(d, 1, "unreachable-restriction"),
                                at(d, 2, "unreachable-restriction"),
                                at(d, 4, "unreachable-restriction"),
                                at(d, 5, "unreachable-restriction")}
    texts = [str(f["message"]) for f in result.findings]
    assert "`reject_rbl_client x.example` in smtpd_client_restrictions never run" in texts[0]
    assert "warn_if_reject at the end of smtpd_data_restrictions" in texts[2]


def test_restrictions_that_cannot_act_without_delay_reject(tmp_path: Path) -> None:
    lists = """\
        smtpd_client_restrictions = permit_mynetworks, check_recipient_access inline:{a=REJECT}
        smtpd_helo_restrictions = reject_non_fqdn_sender, reject_invalid_helo_hostname
        smtpd_sender_restrictions = reject_non_fqdn_sender, reject_unknown_recipient_domain
        """
    assert lint(write_config(tmp_path / "yes", lists)).findings == []
    d = write_config(tmp_path / "no", "smtpd_delay_reject = no\n" + lists.replace("    ", ""))
    result = lint(d)
    assert result.located() == {at(d, 2, "unreachable-restriction"),
                                at(d, 3, "unreachable-restriction"),
                                at(d, 4, "unreachable-restriction")}
    assert "runs at connect, where there is no recipient" in str(result.findings[0]["message"])


def test_every_startup_warning_of_the_engine_is_reported(tmp_path: Path) -> None:
    from mailgate.config.config import Config
    from mailgate.engine.settings import EngineSettings

    d = write_config(tmp_path / "c", """\
        smtpd_recipient_restrictions = permit_mynetworks, permit, reject_unauth_destination
        smtpd_relay_restrictions = defer_unauth_destination
        """)
    warnings = EngineSettings.from_config(Config.load(str(d))).startup_warnings()
    assert warnings == ["restriction `reject_unauth_destination' after `permit' is ignored"]
    result = lint(d)
    unreachable = result.of("unreachable-restriction")
    assert result.located() == {at(d, 1, "unreachable-restriction")}
    for warning in warnings:
        name = warning.split("`")[1].split("'")[0]
        assert any(f"`{name}`" in str(f["message"]) for f in unreachable)


def test_unknown_restrictions_missing_arguments_and_comments(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_client_restrictions = reject_unknown_reverse_client_hostnme
        smtpd_helo_restrictions = reject_rbl_client
        smtpd_sender_restrictions = check_sender_access
        smtpd_recipient_restrictions = reject_unauth_destination,  # no relaying
            reject_unverified_recipient
        smtpd_data_restrictions = hash:DIR/data
        """)
    result = lint(d)
    unknown = result.of("unknown-restriction")
    assert [f["line"] for f in unknown] == [1, 2, 3, 4, 6]
    hints = [str(f["suggestion"]) for f in unknown]
    assert hints[0] == "did you mean `reject_unknown_reverse_client_hostname`?"
    assert hints[1] == "write `reject_rbl_client zen.spamhaus.org`"
    assert "`#` starts a comment only at the beginning of a line" in hints[3]
    assert "check_sender_access hash:" in hints[4]
    assert result.located() >= {at(d, 4, "comment-in-value")}
    assert result.status == 1


def test_risky_restrictions(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_client_restrictions = reject_unknown_client_hostname
        smtpd_helo_restrictions = reject_unknown_helo_hostname
        smtpd_sender_restrictions = reject_rbl_client dnsbl-3.uceprotect.net
        smtpd_recipient_restrictions = permit_mx_backup, reject_unauth_destination
        smtpd_relay_restrictions = permit_tls_all_clientcerts, reject_unauth_destination
        smtpd_data_restrictions = check_relay_domains
        """)
    result = lint(d)
    assert result.located() == {at(d, n, "risky-restriction") for n in range(1, 7)}
    assert result.status == 0
    hints = [str(f["suggestion"]) for f in result.findings]
    assert "reject_unknown_reverse_client_hostname" in hints[0]
    assert "smtpd_helo_required = yes" in hints[1]


def test_softened_risky_restrictions_are_not_reported(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        smtpd_helo_required = yes
        smtpd_client_restrictions = warn_if_reject reject_unknown_client_hostname
        smtpd_helo_restrictions = reject_unknown_helo_hostname
        permit_mx_backup_networks = 192.0.2.0/24
        smtpd_recipient_restrictions = permit_mx_backup, reject_unauth_destination
        """)
    assert lint(d).findings == []


# --- parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize(("lines", "line"), [
    ("smtpd_soft_error_limit = 10\nsmtpd_hard_error_limit = 10\n", 2),
    ("smtpd_hard_error_limit = 3\n", 1),
    ("smtpd_soft_error_limit = 30\n", 1),
    ("smtpd_error_sleep_time = 0\n", 1),
])
def test_tarpit_that_never_delays(tmp_path: Path, lines: str, line: int) -> None:
    d = write_config(tmp_path / "c", lines)
    assert lint(d).located() == {at(d, line, "tarpit-never")}


def test_tarpit_of_one_master_cf_service(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "smtpd_error_sleep_growth = 1s\n", master_cf="""\
        smtp      inet  n  -  n  -  -  smtpd
        # a service for a load test
        2525      inet  n  -  n  -  -  smtpd
          -o smtpd_hard_error_limit=5
          -o smtpd_error_sleep_time=0
        """)
    assert lint(d).located() == {at(d, 3, "tarpit-never", "master.cf")}


@pytest.mark.parametrize("resolver", ["8.8.8.8", "2606:4700:4700::1111", "9.9.9.9:53",
                                      "[2001:4860:4860::8844]:53"])
def test_public_resolver_with_lists_that_refuse_it(tmp_path: Path, resolver: str) -> None:
    d = write_config(tmp_path / "c", f"""\
        resolver_servers = {resolver}
        smtpd_client_restrictions = reject_rbl_client zen.spamhaus.org=127.0.0.[2..11],
            reject_rbl_client bl.spamcop.net
        smtpd_sender_restrictions = reject_rhsbl_sender dbl.spamhaus.org
        smtpd_dnsbl_sites = b.barracudacentral.org*2, list.dnswl.org=127.0.[0..255].[1..3]*-5
        smtpd_recipient_restrictions = reject_unauth_destination, reject_dnsbl_score
        """)
    result = lint(d)
    assert result.located() == {at(d, 2, "public-resolver-dnsbl"),
                                at(d, 4, "public-resolver-dnsbl"),
                                at(d, 5, "public-resolver-dnsbl")}
    assert len(result.findings) == 3
    assert "127.255.255.254" in str(result.findings[0]["message"])


def test_public_resolver_from_resolv_conf(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "smtpd_client_restrictions = reject_rbl_client "
                                     "multi.uribl.com, reject_rbl_client xbl.spamhaus.org\n"
                                     "postscreen_dnsbl_sites = zen.spamhaus.org*3\n")
    assert lint(d, resolvers="127.0.0.53").located() == set()  # (postscreen_* are known)
    result = lint(d, resolvers="127.0.0.1 1.1.1.1")
    assert result.located() == {at(d, 1, "public-resolver-dnsbl"),
                                at(d, 2, "public-resolver-dnsbl")}
    assert "1.1.1.1 (Cloudflare)" in str(result.findings[0]["message"])


def test_startup_warnings_are_in_the_report(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", """\
        # a comment
        smtpd_helo_required = no
        smtpd_recipient_restriction = reject_unauth_destination
        smtpd_helo_required = yes
        command_directory = /usr/sbin
        """, master_cf="""\
          -o stray=1
        smtp      inet  n  -  n  -  -  smtpd
          -o smtpd_bogus=1
        pickup    unix  n  -  y  60 1  pickup
        """)
    result = lint(d)
    assert result.located() == {at(d, 4, "overriding-entry"), at(d, 3, "unused-parameter"),
                                at(d, 2, "unused-parameter", "master.cf"),
                                at(d, 1, "startup-warning", "master.cf")}
    hints = {f["line"]: f["suggestion"] for f in result.of("unused-parameter")}
    assert hints[3] == "did you mean smtpd_recipient_restrictions?"


def test_master_cf_without_smtpd_service(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "\n", master_cf="pickup unix n - y 60 1 pickup\n")
    assert lint(d).located() == {at(d, 0, "startup-warning", "master.cf")}


def test_what_stops_start_up_is_an_error(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "smtpd_soft_error_limit = many\n")
    result = lint(d)
    assert result.located() == {at(d, 1, "config-error")} and result.status == 1
    d = write_config(tmp_path / "m", "smtpd_restriction_classes = strict\n", master_cf="""\
        smtp       inet  n  -  n  -  -  smtpd
        postscreen inet  n  -  n  -  1  postscreen
        """)
    result = lint(d)
    assert result.located() == {at(d, 0, "config-error"),
                                at(d, 2, "config-error", "master.cf")}
    assert "restriction class `strict' needs a definition" in str(result.findings[0]["message"])
    d = write_config(tmp_path / "s", "\n", master_cf="""\
        submission inet  n  -  n  -  -  smtpd
          -o smtpd_sasl_auth_enable=yes
        """)
    result = lint(d)
    assert result.located() == {at(d, 0, "config-error")}  # smtpd_sasl_type's default
    assert str(result.findings[0]["message"]).startswith("unsupported SASL server")


# --- clean configurations ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["main.cf.dist", "main.cf.debian"])
def test_postfix_default_main_cf_is_clean(tmp_path: Path, name: str) -> None:
    stock = Path("/usr/share/postfix") / name
    if not stock.exists():
        pytest.skip(f"{stock} is not installed (Debian's postfix package)")
    d = tmp_path / "c"
    d.mkdir()
    shutil.copy(stock, d / MAIN)
    if Path("/usr/share/postfix/master.cf.dist").exists():
        shutil.copy("/usr/share/postfix/master.cf.dist", d / "master.cf")
    result = lint(d)
    assert result.findings == [] and result.status == 0


def test_embedded_configuration_is_clean(tmp_path: Path) -> None:
    result = lint(None, scratch=tmp_path)
    assert result.findings == [] and result.status == 0


ARTICLE_DONE_RIGHT = """\
    # The article's configuration, done right: octet prefixes and a cidr: table instead of
    # "wildcards", postmap'd tables, relay control first, HELO required.
    myhostname = mx.example.com
    mydestination = $myhostname, example.com
    mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24
    smtpd_helo_required = yes
    disable_vrfy_command = yes
    smtpd_delay_reject = yes
    smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
        reject_unauth_destination
    smtpd_client_restrictions = permit_mynetworks,
        check_client_access hash:DIR/access,
        check_client_access cidr:DIR/networks.cidr,
        reject_unknown_reverse_client_hostname
    smtpd_helo_restrictions = permit_mynetworks, reject_invalid_helo_hostname,
        reject_non_fqdn_helo_hostname, check_helo_access hash:DIR/helo_access
    smtpd_sender_restrictions = reject_non_fqdn_sender, reject_unknown_sender_domain,
        check_sender_access hash:DIR/sender_access
    smtpd_recipient_restrictions = reject_non_fqdn_recipient,
        reject_unknown_recipient_domain, reject_unauth_pipelining,
        permit_mynetworks, reject_unauth_destination,
        reject_rbl_client zen.spamhaus.org, reject_rhsbl_sender dbl.spamhaus.org
    smtpd_data_restrictions = reject_unauth_pipelining
    smtpd_soft_error_limit = 3
    smtpd_hard_error_limit = 12
    smtpd_error_sleep_time = 2s
    """


def test_article_configuration_done_right_is_clean(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", ARTICLE_DONE_RIGHT, tables={
        "access": "# octet prefixes, not 200.123.*.*\n200.123 REJECT\n203.0.113.7 REJECT\n"
                  "spammer.example REJECT\n",
        "networks.cidr": "198.51.100.0/24 REJECT\n2001:db8:bad::/48 REJECT\n",
        "helo_access": "mx.example.com REJECT You are not me\n192.0.2.1 REJECT\n",
        "sender_access": "spam.example REJECT\nfriend.example OK\n"},
        postmap=("access", "helo_access", "sender_access"))
    result = lint(d, resolvers="127.0.0.1")
    assert result.findings == [] and result.status == 0
    # the same configuration with the article's mistakes
    (d / "access").write_text("200.123.*.* REJECT\n")
    os.utime(d / "access", (2e9, 2e9))
    assert lint(d).located() == {at(d, 1, "wildcard-key", "access"), at(d, 11, "stale-table")}
