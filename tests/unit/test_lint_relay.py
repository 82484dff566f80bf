"""`mailgate lint`'s open-relay proof: the classic mistakes are found and blamed on the line to
change; Postfix's defaults and sane configurations are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.lintcase import lint, write_config

# (main.cf, the line the finding names, a text the message must hold)
OPEN = {
    "permit-before-check": ("smtpd_relay_restrictions = permit, reject_unauth_destination\n",
                            1, "before `reject_unauth_destination` can refuse it"),
    "permit-at-the-end": ("smtpd_relay_restrictions = permit_mynetworks, permit\n", 1,
                          "`permit` accepts every client"),
    "world-mynetworks": ("# everyone is local\nmynetworks = 0.0.0.0/0\n", 2,
                         "mynetworks includes 0.0.0.0/0, every IPv4 address"),
    "world-mynetworks-ipv6": ("mynetworks = 127.0.0.0/8, [::]/0\n", 1,
                              "[::]/0, every IPv6 address"),
    "broad-public-mynetworks": ("mynetworks = 127.0.0.0/8 45.0.0.0/8\n", 1,
                                "45.0.0.0/8, 16,777,216 public IPv4 addresses"),
    "mynetworks-file": ("mynetworks = DIR/networks\n", 1, "mynetworks includes 0.0.0.0/1, 2,147,483,648"),
    "mynetworks-cidr-table": ("mynetworks = cidr:DIR/networks.cidr\n", 1,
                              "whose line `0.0.0.0/0 OK` every IPv4 client matches"),
    "mynetworks-static": ("mynetworks = static:yes\n", 1, "static:yes, which matches every client"),
    "empty-relay-list": ("smtpd_relay_restrictions =\n"
                         "smtpd_recipient_restrictions = permit_mynetworks,\n"
                         "    reject_rbl_client zen.spamhaus.org\n", 1,
                         "mailgate serve refuses to start"),
    "static-ok-table": ("smtpd_relay_restrictions = permit_mynetworks,\n"
                        "    check_client_access static:OK, defer_unauth_destination\n", 1,
                        "answers every key -> OK"),
    "forged-sender-whitelist": ("smtpd_relay_restrictions =\n"
                                "smtpd_recipient_restrictions = permit_mynetworks,\n"
                                "    check_sender_access hash:DIR/senders,\n"
                                "    reject_unauth_destination\n", 2,
                                "friend.example -> OK"),
    "helo-whitelist-regexp": ("smtpd_relay_restrictions = check_helo_access "
                              "regexp:DIR/helo.re, reject_unauth_destination\n", 1,
                              "localhost -> OK"),
    "recipient-any-domain": ("smtpd_relay_restrictions = check_recipient_access "
                             "inline:{postmaster@=OK}, reject_unauth_destination\n", 1,
                             "postmaster@ -> OK"),
    "cidr-client-world": ("smtpd_relay_restrictions = check_client_access cidr:DIR/networks.cidr,"
                          "\n    reject_unauth_destination\n", 1, "answers 0.0.0.0/0 OK"),
    "class-that-permits": ("smtpd_restriction_classes = trusted\ntrusted = permit\n"
                           "smtpd_relay_restrictions = trusted, reject_unauth_destination\n", 3,
                           "the restriction class `trusted` accepts it"),
    "access-value-is-a-list": ("smtpd_relay_restrictions = check_client_access "
                               "static:{permit_mynetworks, permit}, reject_unauth_destination\n",
                               1, "every key -> permit_mynetworks, permit"),
    "warn-if-reject-on-the-check": ("smtpd_relay_restrictions = permit_mynetworks, "
                                    "warn_if_reject reject_unauth_destination\n", 1,
                                    "mailgate serve refuses to start"),
    "mynetworks-top-level-domain": ("mynetworks = 127.0.0.0/8 com\n", 1,
                                    "every client whose name ends in .com"),
    "null-sender-whitelisted": ("smtpd_relay_restrictions = check_sender_access "
                                "inline:{<>=OK}, reject_unauth_destination\n", 1,
                                "answers <> -> OK"),
    "naked-ip-helo": ("smtpd_relay_restrictions = permit_naked_ip_address, "
                      "defer_unauth_destination\n", 1, "HELO with a bare address"),
    "check-in-a-list-that-runs-too-early": ("smtpd_delay_reject = no\n"
                                            "smtpd_relay_restrictions =\n"
                                            "smtpd_client_restrictions = "
                                            "reject_unauth_destination\n", 2,
                                            "neither smtpd_relay_restrictions nor"),
}
TABLES = {"networks": "192.0.2.0/24\n0.0.0.0/1\n",
          "networks.cidr": "192.0.2.0/24 OK\n0.0.0.0/0 OK\n",
          "senders": "spam.example REJECT\nfriend.example OK\n",
          "helo.re": "/^localhost$/ OK\n/^mail\\./ DUNNO\n"}


@pytest.mark.parametrize("case", sorted(OPEN))
def test_open_relay_is_found_where_it_is_made(tmp_path: Path, case: str) -> None:
    main_cf, line, text = OPEN[case]
    d = write_config(tmp_path / "c", main_cf, tables=TABLES, postmap=("senders",))
    result = lint(d)
    relay = result.of("open-relay")
    assert [(f["file"], f["line"]) for f in relay] == [(str(d / "main.cf"), line)], \
        result.findings
    assert text in str(relay[0]["message"]), relay[0]["message"]
    assert relay[0]["severity"] == "error" and result.status == 1


CLOSED = {
    "postfix-defaults": "",
    "mynetworks-of-the-site": "mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24 10.0.0.0/8\n",
    "ipv6-world-but-ipv4-only": "inet_protocols = ipv4\nmynetworks = [::]/0 127.0.0.0/8\n",
    "classic-recipient-list": ("smtpd_relay_restrictions =\n"
                               "smtpd_recipient_restrictions = permit_mynetworks,\n"
                               "    permit_sasl_authenticated, reject_unauth_destination,\n"
                               "    check_sender_access hash:DIR/senders, permit\n"),
    "whitelist-in-the-sender-list": ("smtpd_sender_restrictions = check_sender_access "
                                     "hash:DIR/senders, reject_unknown_sender_domain\n"),
    "permit-in-relay-but-check-in-recipient": ("smtpd_relay_restrictions = permit\n"
                                               "smtpd_recipient_restrictions = "
                                               "reject_unauth_destination\n"),
    "closed-to-all-but-mynetworks": ("smtpd_relay_restrictions =\n"
                                     "smtpd_client_restrictions = permit_mynetworks, reject\n"
                                     "smtpd_recipient_restrictions = permit_auth_destination,"
                                     " reject\n"),
    "check-in-client-list-with-delay": ("smtpd_relay_restrictions = permit_mynetworks, reject\n"
                                        "smtpd_client_restrictions = permit_mynetworks,\n"
                                        "    reject_unauth_destination\n"),
    "policy-server-decides": ("smtpd_relay_restrictions = permit_mynetworks,\n"
                              "    check_policy_service inet:127.0.0.1:10031, defer\n"),
    "own-domains-whitelisted-for-recipients": ("smtpd_relay_restrictions = "
                                               "check_recipient_access "
                                               "inline:{example.com=OK}, "
                                               "reject_unauth_destination\n"),
    "cidr-trusted-network": ("smtpd_relay_restrictions = check_client_access "
                             "cidr:DIR/trusted.cidr, reject_unauth_destination\n"),
    "defer-if-permit": "smtpd_relay_restrictions = permit_mynetworks, defer_if_permit\n",
    "world-line-inside-an-if": "mynetworks = 127.0.0.0/8 cidr:DIR/if.cidr\n",
    "sender-whitelist-after-the-check": ("smtpd_relay_restrictions = permit_mynetworks,\n"
                                         "    reject_unauth_destination,\n"
                                         "    check_sender_access inline:{<>=OK}\n"),
}


@pytest.mark.parametrize("case", sorted(CLOSED))
def test_no_open_relay_in_sane_configurations(tmp_path: Path, case: str) -> None:
    d = write_config(tmp_path / "c", CLOSED[case],
                     tables={**TABLES, "trusted.cidr": "192.0.2.0/24 OK\n",
                             "if.cidr": "if 192.0.2.0/24\n0.0.0.0/0 OK\nendif\n"},
                     postmap=("senders",))
    result = lint(d)
    assert result.of("open-relay") == [], result.findings
    assert "config-error" not in result.codes()


def test_open_relay_of_one_master_cf_service(tmp_path: Path) -> None:
    d = write_config(tmp_path / "c", "\n", master_cf="""\
        smtp       inet  n  -  n  -  -  smtpd
        submission inet  n  -  n  -  -  smtpd
          -o smtpd_relay_restrictions=permit_sasl_authenticated,permit
        """)
    relay = lint(d).of("open-relay")
    assert [(f["file"], f["line"]) for f in relay] == [(str(d / "master.cf"), 2)]


def test_start_up_refusal_without_open_relay_is_a_config_error(tmp_path: Path) -> None:
    """A policy server alone does not satisfy smtpd's relay check: no proof of an open
    relay, but the server does not start."""
    d = write_config(tmp_path / "c", "smtpd_relay_restrictions = check_policy_service "
                                     "inet:127.0.0.1:10031\n")
    result = lint(d)
    assert result.codes() == {"config-error"}
    assert "specify at least one working instance" in str(result.findings[0]["message"])
