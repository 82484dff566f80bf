"""Random restriction configurations and SMTP dialogues for differential tests against a live
Postfix 3.7 (tests/interop/test_differential.py). Deterministic for a given seed.

A dialogue is a list of items: a `str` is one command line (tab-separated commands are sent in
one write, as a pipelined group; after `DATA` the message text lines follow up to `.`), a
`bytes` item is sent as it is (a BDAT command with its chunk, or a line that is not UTF-8) and
gets one reply.
"""

from __future__ import annotations

import random

Item = str | bytes

DOMAINS = ("example.test", "mx.example.test", "relay.example", "sub.relay.example",
           "elsewhere.example", "bad.example", "sub.bad.example", "ok.example", "nodots")
SENDERS = ("s@sender.example", "", "a@bad.example", "b@sub.bad.example", "c@ok.example",
           "x@nodots", "alice@example.test", "nobody@example.test", "q@elsewhere.example",
           "user+ext@ok.example", "jörg@bücher.example", "Ålice@example.test",
           "ALICE@Example.TEST", "s@exämple.test", "Q@Elsewhere.Example")
RECIPIENTS = ("alice@example.test", "bob@example.test", "nobody@example.test",
              "postmaster", "postmaster@example.test", "user@elsewhere.example",
              "user@relay.example", "u@sub.relay.example", "x@nodots", "a@bad.example",
              "c@ok.example", "user%elsewhere.example@mx.example.test", "alice@mx.example.test",
              "user+ext@ok.example", "r@sub.bad.example", "USER@OK.EXAMPLE",
              "ålice@example.test", "Bob@Example.TEST", "jörg@bücher.example",
              "bob@exämple.test", "ÅLICE@EXAMPLE.TEST")
HELOS = ("client.example", "nodots", "[127.0.0.1]", "[300.1.1.1]", "1.2.3.4", "bad.example",
         "sub.bad.example", "-bad-.example", "ok.example.", "a_b.example", "bücher.example",
         "Client.EXAMPLE")
CLIENTS = ("", "NAME=host.bad.example ADDR=192.0.2.7", "NAME=[UNAVAILABLE] ADDR=198.51.100.3",
           "NAME=ok.example ADDR=10.1.2.3", "NAME=[TEMPUNAVAIL] ADDR=203.0.113.9")
ACTIONS = ("OK", "REJECT", "REJECT go away", "DEFER", "DEFER later", "550 5.7.0 custom",
           "450 try later", "DUNNO", "WARN watch this", "INFO noted", "HOLD", "DISCARD",
           "FILTER smtp:[127.0.0.1]:10025", "REDIRECT x@ok.example", "BCC arch@example.test",
           "PREPEND X-Diff: yes", "DEFER_IF_PERMIT not now", "DEFER_IF_REJECT maybe", "12345",
           "521 bye now", "restrictive", "permissive", "reject_unauth_destination",
           "REJECT 4.1.1 dsn fixed", "550 5.1.8 sender dsn", "FILTER", "REDIRECT nowhere")
GENERIC = ("permit", "reject", "defer", "defer_if_permit", "defer_if_reject",
           "reject_unauth_pipelining", "permit_mynetworks", "permit_inet_interfaces")


# A pattern table that shows the key smtpd looked up (the resolved address, case-folded as a
# whole) for keys that are not plain lower-case ASCII, and gives an empty result (a
# configuration error) for nobody@.
ECHO_TABLE = ("pcre:{{/^(.*[^a-z0-9@.+%_-].*)$$/ REJECT key=$$1}, {/^(x)?nobody@/ $$1}}")


def _table(rng: random.Random, keys: tuple[str, ...]) -> str:
    pairs = [f"{{{key}={rng.choice(ACTIONS)}}}" for key in rng.sample(keys, rng.randint(1, 4))]
    return "inline:{" + ", ".join(pairs) + "}"


def _stage(rng: random.Random, specific: tuple[str, ...], keys: tuple[str, ...],
           access: str) -> str:
    items = []
    for _ in range(rng.randint(0, 3)):
        pick = rng.random()
        if pick < 0.35:
            items.append(f"{access} {_table(rng, keys)}")
        elif pick < 0.7 and specific:
            items.append(rng.choice(specific))
        elif pick < 0.8:
            items.append("warn_if_reject")
        else:
            items.append(rng.choice((*GENERIC, "restrictive", "permissive")))
    return ", ".join(items)


def configuration(rng: random.Random) -> dict[str, str]:
    client_keys = ("127.0.0.1", "127.0.0", "localhost", "bad.example", "192.0.2", "unknown",
                   "10.1.2.3", "ok.example")
    helo_keys = ("client.example", "bad.example", "nodots", "[127.0.0.1]", "1.2.3.4",
                 "ok.example", "bücher.example", "CLIENT.example")
    mail_keys = ("bad.example", "ok.example", "s@sender.example", "<>", "sender.example",
                 "user@", "user+ext@", "alice@example.test", "example.test", "elsewhere.example",
                 "jörg@bücher.example", "bücher.example", "Ålice@example.test", "ålice@",
                 "EXÄMPLE.test", "Bob@example.TEST")
    relay = rng.choice(("reject_unauth_destination", "defer_unauth_destination"))
    settings = {
        "smtpd_restriction_classes": "restrictive, permissive",
        "restrictive": rng.choice(("reject_non_fqdn_sender, reject", "reject_unauth_destination",
                                   "defer_if_permit, permit")),
        "permissive": "permit",
        "smtpd_client_restrictions": _stage(rng, (
            "reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname",
            f"check_reverse_client_hostname_access {_table(rng, client_keys)}",
            "check_client_access cidr:{{192.0.2.0/24 REJECT cidr net}, {10.0.0.0/8 OK}, "
            "{127.0.0.1 DUNNO}}"),
            client_keys, "check_client_access"),
        "smtpd_helo_restrictions": _stage(rng, (
            "reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname"), helo_keys,
            "check_helo_access"),
        "smtpd_sender_restrictions": _stage(rng, (
            "reject_non_fqdn_sender", "reject_unlisted_sender",
            "check_sender_access regexp:{{/^a@/ REJECT regexp a}, {/example\\.test$$/ OK}}",
            f"check_sender_access {ECHO_TABLE}"),
            mail_keys, "check_sender_access"),
        "smtpd_relay_restrictions": rng.choice(("permit_mynetworks, ", "")) + relay,
        "smtpd_recipient_restrictions": _stage(rng, (
            "reject_non_fqdn_recipient", "reject_unlisted_recipient", "permit_auth_destination",
            "reject_multi_recipient_bounce", f"check_recipient_access {ECHO_TABLE}"),
            mail_keys, "check_recipient_access"),
        "smtpd_data_restrictions": rng.choice((
            "", "reject_unauth_pipelining", "reject_multi_recipient_bounce", "defer_if_permit",
            "warn_if_reject reject", f"check_sender_access {_table(rng, mail_keys)}",
            f"check_client_access {_table(rng, client_keys)}",
            f"check_recipient_access {_table(rng, mail_keys)}")),
        "smtpd_end_of_data_restrictions": rng.choice((
            "", "", "reject_multi_recipient_bounce", "warn_if_reject reject",
            f"check_sender_access {_table(rng, mail_keys)}",
            f"check_helo_access {_table(rng, helo_keys)}")),
        "smtpd_client_port_logging": rng.choice(("no", "no", "yes")),
        "smtpd_recipient_limit": rng.choice(("1000", "1000", "2")),
        "smtpd_etrn_restrictions": rng.choice(("", "reject", "permit_mynetworks, reject",
                                               f"check_etrn_access {_table(rng, DOMAINS)}")),
        "smtpd_delay_reject": rng.choice(("yes", "yes", "no")),
        "parent_domain_matches_subdomains": rng.choice((
            "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
            "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
            "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
            "qmqpd_authorized_clients,relay_domains")),
        "smtpd_null_access_lookup_key": rng.choice(("<>", "<>", "MAILER-DAEMON")),
        "allow_untrusted_routing": rng.choice(("no", "no", "yes")),
        "show_user_unknown_table_name": rng.choice(("yes", "no")),
        "unknown_local_recipient_reject_code": rng.choice(("550", "450")),
        "reject_code": rng.choice(("554", "550")),
        "defer_code": rng.choice(("450", "451")),
        "disable_vrfy_command": rng.choice(("no", "no", "yes")),
        "smtpd_log_access_permit_actions": rng.choice(("", "", "static:all",
                                                       "permit_mynetworks, OK")),
        "smtpd_helo_required": rng.choice(("no", "no", "yes")),
        "mynetworks": rng.choice(("127.0.0.0/8", "10.0.0.0/8")),
        "relay_domains": "relay.example",
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "soft_bounce": rng.choice(("no", "no", "no", "yes")),
        "smtpd_hard_error_limit": str(rng.choice((5, 8, 20))),
        "smtpd_soft_error_limit": "3",
        "smtpd_error_sleep_time": "0s",
        "smtpd_junk_command_limit": str(rng.choice((3, 100))),
        "smtputf8_enable": rng.choice(("yes", "yes", "no")),
        "smtpd_discard_ehlo_keywords": rng.choice((
            "", "", "", "silent-discard, dsn", "pipelining, etrn", "smtputf8, size",
            "chunking", "enhancedstatuscodes, vrfy")),
        "recipient_delimiter": rng.choice(("", "+")),
        "smtpd_reject_unlisted_recipient": rng.choice(("yes", "yes", "no")),
        "access_map_reject_code": rng.choice(("554", "554", "550")),
        "relay_domains_reject_code": rng.choice(("554", "550")),
        "unknown_client_reject_code": rng.choice(("450", "550")),
    }
    if rng.random() < TARPIT_SHARE:
        # The tarpit shows (Postfix takes whole seconds only); EHLO answers one line per
        # sleep, so most keywords are discarded to keep its reply short.
        settings.update({
            "smtpd_error_sleep_time": "1s",
            "smtpd_soft_error_limit": str(rng.choice((2, 3))),
            "smtpd_hard_error_limit": str(rng.choice((4, 6))),
            "smtpd_discard_ehlo_keywords": "silent-discard, pipelining, size, vrfy, etrn, "
                                           "8bitmime, dsn, smtputf8, chunking"})
    return settings


TARPIT_SHARE = 0.2


MAIL_PARAMS = ("", "", "", " SMTPUTF8", " BODY=8BITMIME", " SIZE=100", " SMTPUTF8 BODY=8BITMIME")
# Commands that fail (or count as junk), to push the error count over the soft limit.
JUNK: tuple[Item, ...] = (
    "NOOP", "FOO", "", "MAIL", "RCPT TO:<alice@example.test>", "RSET x", "HELO", "VRFY",
    "ETRN", "Subject: header", b"MAIL FROM:<\xff@x.example>\r\n", b"NOOP \xc3(\r\n",
    b"FOO\xfe\r\n", b"RCPT TO:<a\xe9@example.test>\r\n", b"HELO b\xffx.example\r\n",
    "DATA x", "BDAT", "EHLO")
PAYLOADS = (b"Subject: chunk\r\n\r\nbody\r\n", b"abc", b"a\nb", b"a\r\n.", b"")
MESSAGE = ["Subject: differential", "", "body", "."]


def _greeting(rng: random.Random) -> str:
    return f"{rng.choice(('EHLO', 'EHLO', 'HELO'))} {rng.choice(HELOS)}"


def _bdat(size: int, last: bool, payload: bytes) -> bytes:
    return f"BDAT {size}{' LAST' if last else ''}\r\n".encode() + payload


def _chunks(rng: random.Random) -> list[Item]:
    """A BDAT transfer: chunks and BDAT LAST, sometimes with an error among them."""
    out: list[Item] = []
    for _ in range(rng.randint(0, 2)):
        payload = rng.choice(PAYLOADS[:-1])
        out.append(_bdat(len(payload), False, payload))
    odd = rng.random()
    if odd < 0.1:
        out.append(_bdat(0, False, b""))  # null BDAT request
    elif odd < 0.2:
        out.append("DATA")  # DATA after BDAT
    elif odd < 0.25:
        out.append(b"BDAT 3 last\r\nabc")
    elif odd < 0.28:
        out.append(b"BDAT x\r\n")  # malformed: 521 and disconnect
    payload = rng.choice(PAYLOADS)
    out.append(_bdat(len(payload), True, payload))
    return out


def _transaction(rng: random.Random) -> list[Item]:
    out: list[Item] = []
    if rng.random() < 0.15:  # a pipelined group (after HELO: improper pipelining)
        out.append("\t".join((f"MAIL FROM:<{rng.choice(SENDERS)}>",
                               f"RCPT TO:<{rng.choice(RECIPIENTS)}>",
                               rng.choice(("RSET", "RSET", "NOOP", "DATA")))))
    if rng.random() < 0.9:
        out.append(f"MAIL FROM:<{rng.choice(SENDERS)}>{rng.choice(MAIL_PARAMS)}")
    for _ in range(rng.randint(0, 4)):
        out.append(f"RCPT TO:<{rng.choice(RECIPIENTS)}>")
        odd = rng.random()
        if odd < 0.06:
            out.append("RSET")  # RSET between recipients
        elif odd < 0.12:
            out.append(_greeting(rng))  # a greeting in the middle of the transaction
        elif odd < 0.15:
            out.append(f"RCPT TO:<{rng.choice(RECIPIENTS)}>\tRSET")
    end = rng.random()
    if end < 0.45:
        out += ["DATA", *MESSAGE]
        if rng.random() < 0.1:
            out.append(rng.choice(("RSET", "DATA", b"BDAT 1 LAST\r\nx")))  # after DATA
    elif end < 0.7:
        out += _chunks(rng)
    elif end < 0.85:
        out.append("RSET")
    return out


def session(rng: random.Random, errors: bool = False) -> list[Item]:
    """Client items of one session; with `errors`, enough failing commands to reach the
    tarpit (the soft error limit) before a transaction."""
    lines: list[Item] = []
    client = rng.choice(CLIENTS)
    if client:
        lines.append(f"XCLIENT {client}")
    if rng.random() < 0.1:
        lines.append("RSET")  # before any greeting
    greeting = rng.random()
    if greeting < 0.85:
        lines.append(_greeting(rng))
        if rng.random() < 0.15:
            lines.append(_greeting(rng))  # greeting twice, same or mixed
    for _ in range(rng.randint(2, 4) if errors else 0):
        lines.append(rng.choice(JUNK))
    for _ in range(rng.randint(1, 2)):
        lines += _transaction(rng)
        if rng.random() < 0.2:
            lines.append(rng.choice(JUNK))
    if rng.random() < 0.3:
        lines.append(f"ETRN {rng.choice(DOMAINS)}")
    if rng.random() < 0.3:
        lines.append(f"VRFY {rng.choice(RECIPIENTS)}{rng.choice(('', '', ' SMTPUTF8'))}")
    if rng.random() < 0.95:
        lines.append("QUIT")
    return lines


def script(seed: int, sessions: int = 3) -> tuple[dict[str, str], list[list[Item]]]:
    rng = random.Random(seed)
    settings = configuration(rng)
    errors = settings["smtpd_error_sleep_time"] != "0s"
    return settings, [session(rng, errors) for _ in range(sessions)]


def seeds(text: str) -> list[int]:
    """The seeds an environment variable names: `1 2 3`, `1-300`, or `1-50,300`."""
    out: list[int] = []
    for part in text.replace(",", " ").split():
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out
