"""Random restriction configurations for the replay ground truth (tests/e2e/test_replay_random.py):
stage lists over the checks `mailgate replay` evaluates, with tables keyed on the clients,
names and envelopes of support/replayplay, reply codes and smtpd_delay_reject both ways."""

from __future__ import annotations

import random

ACTIONS = ("REJECT", "REJECT listed here", "OK", "DUNNO", "DEFER", "550 5.7.1 custom",
           "450 4.7.1 later", "WARN noted", "DEFER_IF_PERMIT wait", "DEFER_IF_REJECT maybe",
           "reject_unauth_destination", "permit", "HOLD", "DISCARD", "PREPEND X-Replay: yes")
CLIENT_KEYS = ("192.0.2.5", "192.0.2", "127.0.0.20", "198.51.100.9", "203.0.113",
               "mail.example.org", "example.org", "spam.example", "unknown", "good.mailgate.test")
HELO_KEYS = ("mail.example.org", "localhost", "good.mailgate.test", "listed.mailgate.test",
             "[192.0.2.1]", "example.org", "mailgate.test")
SENDER_KEYS = ("spam.example.org", "porcupine.org", "mailgate.test", "bogus",
               "nxdomain.mailgate.test", "<>", "s1@mailgate.test", "example.org")
RECIPIENT_KEYS = ("alice@example.test", "bob@", "nobody@example.test", "example.test",
                  "other.example", "postmaster@example.test", "alice")

CLIENT = ("reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname",
          "reject_rbl_client bl.mailgate.test", "reject_rbl_client bl.mailgate.test=127.0.0.4",
          "permit_dnswl_client wl.mailgate.test", "reject_rhsbl_client rhs.mailgate.test",
          "check_client_access cidr:{{192.0.2.0/24 REJECT cidr net}, {127.0.0.10 OK}}",
          "permit_mynetworks", "reject_unknown_client_hostname")
HELO = ("reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname",
        "reject_unknown_helo_hostname", "reject_rhsbl_helo rhs.mailgate.test")
SENDER = ("reject_non_fqdn_sender", "reject_unknown_sender_domain",
          "reject_rhsbl_sender rhs.mailgate.test", "reject_unlisted_sender",
          "check_sender_mx_access inline:{{mx.mailgate.test=REJECT mx here}}")
RECIPIENT = ("reject_non_fqdn_recipient", "reject_unlisted_recipient",
             "reject_unknown_recipient_domain", "permit_auth_destination",
             "reject_unauth_destination", "defer_if_permit", "reject_unauth_pipelining")
DATA = ("", "", "reject_unauth_pipelining", "reject_multi_recipient_bounce",
        "check_client_access cidr:{{198.51.100.0/24 REJECT no data}}", "defer_if_permit")
END = ("", "", "check_sender_access inline:{{spam.example.org=REJECT not at the end}}",
       "check_client_access cidr:{{203.0.113.0/24 REJECT no end}}",
       "reject_multi_recipient_bounce")
GENERIC = ("warn_if_reject", "permit", "reject", "defer_if_reject")


def _table(rng: random.Random, access: str, keys: tuple[str, ...]) -> str:
    pairs = [f"{{{key}={rng.choice(ACTIONS)}}}" for key in rng.sample(keys, rng.randint(1, 3))]
    return f"{access} inline:{{{', '.join(pairs)}}}"


def _stage(rng: random.Random, specific: tuple[str, ...], access: str,
           keys: tuple[str, ...], most: int = 3) -> str:
    items = []
    for _ in range(rng.randint(0, most)):
        pick = rng.random()
        if pick < 0.35:
            items.append(_table(rng, access, keys))
        elif pick < 0.85:
            items.append(rng.choice(specific))
        else:
            items.append(rng.choice(GENERIC))
    return ", ".join(items)


# what asks the DNS (a reference Postfix resolves through the system's resolver, not the
# test zones: its configurations leave these out)
DNS = ("_rbl_", "_dnswl_", "_rhsbl_", "unknown_helo", "unknown_sender_domain",
       "unknown_recipient_domain", "_mx_access")


def configuration(rng: random.Random, dns: bool = True) -> dict[str, str]:
    """One configuration (main.cf lines) over the replay sessions' clients and names. (With
    smtpd_delay_reject = no the client list first lets the player's own connection in, so
    that it can send XCLIENT.)"""
    delay = rng.choice(("yes", "yes", "no"))
    first = "permit_mynetworks, " if delay == "no" else ""
    settings = {
        "mynetworks": "127.0.0.1/32", "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "smtpd_delay_reject": delay,
        "smtpd_helo_required": rng.choice(("yes", "no")),
        "smtpd_client_restrictions": first + _stage(rng, CLIENT, "check_client_access",
                                                    CLIENT_KEYS),
        "smtpd_helo_restrictions": _stage(rng, HELO, "check_helo_access", HELO_KEYS),
        "smtpd_sender_restrictions": _stage(rng, SENDER, "check_sender_access", SENDER_KEYS),
        "smtpd_recipient_restrictions": _stage(rng, RECIPIENT + CLIENT[:4],
                                               "check_recipient_access", RECIPIENT_KEYS, 4),
        "smtpd_relay_restrictions": rng.choice((
            "permit_mynetworks, reject_unauth_destination",
            "permit_mynetworks, defer_unauth_destination", "reject_unauth_destination")),
        "smtpd_data_restrictions": rng.choice(DATA),
        "smtpd_end_of_data_restrictions": rng.choice(END),
        "unknown_client_reject_code": rng.choice(("450", "550")),
        "unknown_address_reject_code": rng.choice(("450", "550")),
        "maps_rbl_reject_code": rng.choice(("554", "550")),
        "access_map_reject_code": rng.choice(("554", "550")),
        "reject_code": rng.choice(("554", "550")),
        "defer_code": rng.choice(("450", "451")),
        "smtpd_recipient_limit": rng.choice(("1000", "1000", "2")),
        "soft_bounce": rng.choice(("no", "no", "no", "yes")),
    }
    if not dns:
        for name, value in settings.items():
            if name.endswith("_restrictions"):
                settings[name] = ", ".join(x for x in value.split(", ")
                                           if not any(word in x for word in DNS))
    return settings
