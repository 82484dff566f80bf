"""Randomized DNS differential suite: random restriction lists over every DNS-using smtpd
restriction (unknown client/HELO/sender/recipient names, DNS block/allow lists with filters
and reply templates, MX/NS/A access, permit_mx_backup) and random sessions (HELO names with
trailing dots, mixed case, address literals, non-ASCII ones that ICU's UTS 46 refuses, with
smtpd's midna warnings; domains with NXDOMAIN, null MX, no address, SERVFAIL; clients
127.0.0.30-38 with varied PTR and forward data) are played to a live Postfix 3.7 and to
mailgate; replies and smtpd log lines must be identical.

The DNS data is tests/data/dns/random/random.zone, served on 127.0.0.154:53 (the reference
runs with a resolv.conf naming it). CI plays a few seeds; MAILGATE_DNS_RANDOM_SEEDS="1 2 ..."
(or MAILGATE_DNS_RANDOM_SEEDS=1-300) plays more by hand."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SHARED, free_port
from support import dns as dns_support
from support import reference
from support.differential import seeds

REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
BASE = Path(__file__).resolve().parents[1] / "data" / "dialogues" / "main.cf"
ZONES = dns_support.ZONES / "random"
ADDRESS = "127.0.0.154"
# One smtpd process and one mailgate worker: list lookups are cached per process (for its
# life), so the sessions of a seed must meet the same cache on both sides.
SAME_AS_REFERENCE = {"inet_protocols": "ipv4", "resolver_timeout": "1s", "smtpd_processes": "1"}
ONE_PROCESS = {"default_process_limit": "1"}
LIST_ERROR = ": list error: "

# --- what a configuration is made of ------------------------------------------------------------

LISTS = ["bl.dom.test", "bl.dom.test=127.0.0.2", "bl.dom.test=127.0.0.[2..5]",
         "bl.dom.test=127.0.0.[3;5]", "bl.dom.test=127.0.0.4", "bl2.dom.test",
         "bl2.dom.test=127.0.0.[1..8]", "bl.dom.test=127.0.0.[6..10]"]
RHS_LISTS = ["rhs.dom.test", "rhs.dom.test=127.0.0.2", "rhs.dom.test=127.0.0.[3..5]"]
ALLOW_LISTS = ["wl.dom.test", "wl.dom.test=127.0.10.2", "wl.dom.test=127.0.0.2"]
BROKEN_LISTS = ["broken.dom.test"]  # SERVFAIL: "RBL lookup error" warnings
TEMPLATES = [
    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
    "$rbl_domain${rbl_reason?; $rbl_reason}",
    "$rbl_code 5.7.1 listed: $rbl_txt",
    "$rbl_code ${rbl_txt?txt=$rbl_txt}${rbl_txt:no txt} via $rbl_domain",
    "550 $rbl_reason / $rbl_txt",
    "421 4.7.0 $client_address $client_name $reverse_client_name $helo_name",
    "$rbl_code $sender $sender_name $sender_domain $recipient $recipient_name $recipient_domain",
    "554 5.7.1 ${rbl_class}: $rbl_what ($client)",
    "no code here $rbl_txt",
    "$rbl_code",
    "$rbl_code 4.7.1",
    "$rbl_code  5.7.123",
    "$rbl_code ",
    "$rbl_code 5.7.1 ${sender?s=$sender}${sender:none} ${recipient_name}",
    "${rbl_code} 5.7.1 ${rbl_reason:none} ${rbl_domain}",
    "$rbl_code 4.7.1 $rbl_txt $rbl_reason",
]
# in rbl_reply_maps only: an unknown name there falls back to default_rbl_reply, in
# default_rbl_reply it makes Postfix's smtpd exit (decision 0032)
MAP_TEMPLATES = [*TEMPLATES, "$rbl_code 5.7.1 ${unknown_macro}x $rbl_txt $server_name"]
ACTIONS = ["REJECT {k}", "OK", "DUNNO", "550 5.7.1 {k} refused", "450 4.7.1 {k} later",
           "REJECT", "WARN {k}", "defer_if_permit", "reject_unknown_sender_domain"]
ACCESS_KEYS = ["mx-ok.dom.test", "dom.test", "ns.dom.test", "127.0.0.40", "127.0.0.41",
               "127.0.0.1", "127.0.0.45", "127.0.0", "mx.dom.test", "a-only.dom.test",
               "127.0.0.99", "127.0.0.30"]


def _access(kind: str) -> str:
    """check_{kind}_{mx,ns,a}_access with a table file written per seed ({table})."""
    prefix = "reverse_client_hostname" if kind == "reverse_client" else kind
    return f"check_{prefix}_{{rr}}_access texthash:{{table}}"


STAGES = {
    "smtpd_client_restrictions": [
        "reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname",
        "reject_rbl_client {list}", "reject_rhsbl_client {rhs}",
        "reject_rhsbl_reverse_client {rhs}", "permit_dnswl_client {allow}",
        "permit_rhswl_client {rhs}", _access("client"), _access("reverse_client"),
        "warn_if_reject", "reject_rbl_client {broken}"],
    "smtpd_helo_restrictions": [
        "reject_unknown_helo_hostname", "reject_invalid_helo_hostname",
        "reject_non_fqdn_helo_hostname", "reject_rhsbl_helo {rhs}", _access("helo"),
        "reject_rbl_client {list}", "warn_if_reject", "permit_dnswl_client {allow}"],
    "smtpd_sender_restrictions": [
        "reject_unknown_sender_domain", "reject_rhsbl_sender {rhs}", _access("sender"),
        "reject_non_fqdn_sender", "warn_if_reject", "reject_unknown_helo_hostname",
        "permit_rhswl_client {rhs}"],
    "smtpd_recipient_restrictions": [
        "reject_unknown_recipient_domain", "reject_rhsbl_recipient {rhs}", _access("recipient"),
        "permit_mx_backup", "reject_rbl_client {list}", "reject_unknown_sender_domain",
        "warn_if_reject", "reject_unauth_destination", "reject_rhsbl_helo {rhs}"],
}
OPTIONS = {
    "unknown_address_tempfail_action": ["defer", "defer_if_permit"],
    "unknown_helo_hostname_tempfail_action": ["defer", "defer_if_permit"],
    "unknown_address_reject_code": ["550", "554", "450"],
    "unknown_hostname_reject_code": ["550", "450", "554"],
    "unknown_client_reject_code": ["550", "450"],
    "maps_rbl_reject_code": ["554", "450", "521", "550"],
    "relay_domains": ["dom.test", "", "mx-only.dom.test, nullmx.dom.test"],
    "permit_mx_backup_networks": ["127.0.0.0/8", "10.0.0.0/8"],
    "smtpd_dns_reply_filter": [f"regexp:{SHARED / 'postfix' / 'tests' / 'dns' / name}"
                               for name in ("no-mx.reg", "no-a.reg", "no-txt.reg")],
}

# --- what sessions are made of ------------------------------------------------------------------

SOURCES = ["127.0.0.1", "127.0.0.2", *(f"127.0.0.{n}" for n in range(30, 39))]
HOSTS = ["mx-ok.dom.test", "a-only.dom.test", "aaaa-only.dom.test", "mx-only.dom.test",
         "nullmx.dom.test", "nullmx-a.dom.test", "nodata.dom.test", "cname.dom.test",
         "dangling.dom.test", "under_score.dom.test", "x.wild.dom.test", "xn--bcher-kva.dom.test",
         "nx.dom.test", "servfail.dom.test", "listed.dom.test", "c30.dom.test", "dom.test",
         "mx-multi.dom.test", "own-ns.dom.test", "sub.dom.test", "mx-nx.dom.test"]
ODD_HELOS = ["[127.0.0.1]", "[IPv6:::1]", "127.0.0.1", "[1.2.3]", "localhost", "-bad.dom.test",
             "mx-ok..dom.test", "bücher.dom.test", "mx-ok.dom.test..", ".", "1.2.3.4.5",
             "[127.0.0.1].", "x_y.dom.test.", "MX-OK.DOM.TEST."]
# Non-ASCII names that ICU's UTS 46 ToASCII refuses (or whose A-label form valid_hostname()
# refuses): smtpd warns once per process per name (midna_domain_to_ascii's cache).
ODD_UTF8 = ["bü-.dom.test", "-bü.dom.test", "-bü-.dom.test", "ab--cd.bü.dom.test",
            "xn--zz.bü.dom.test", "bü..dom.test", "ü" * 64 + ".dom.test", "ü.a-.dom.test",
            "ｆｕｌｌ.bü.dom.test", "\u0301a.bü.dom.test", "bü_x.dom.test", "-ü.123",
            "ü'.dom.test", "ÜBER.DOM.TEST", "a\u200db.bü.dom.test", "bü.dom.test.."]
# Non-ASCII domains: Postfix checks (and looks up) the case-folded, IDNA form; `straße`
# folds to the ASCII `strasse` and needs no SMTPUTF8, `bücher` does.
DOMAINS = [*HOSTS, "mx-backup.dom.test", "mx-self.dom.test", "mx-dead.dom.test", "example.test",
           "[127.0.0.1]", "Mixed-Case.Dom.TEST", "bücher.dom.test", "BÜCHER.dom.test",
           "straße.dom.test", "mx-ſ.dom.test"]


LOCALS = ["s", "S", "König", "ÄÖÜ"]


def _vary(rng: random.Random, name: str) -> str:
    """Trailing dots and letter case, where the classes of difference live."""
    roll = rng.random()
    if roll < 0.25 and not name.startswith("["):
        name += "."
    elif roll < 0.35:
        name = name.upper()
    elif roll < 0.45:
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
    return name


def _fill(rng: random.Random, item: str, tables: dict[str, str]) -> str:
    rr = rng.choice(["mx", "ns", "a"])
    return item.format(list=rng.choice(LISTS), rhs=rng.choice(RHS_LISTS),
                       allow=rng.choice(ALLOW_LISTS), broken=rng.choice(BROKEN_LISTS),
                       rr=rr, table=tables["access"])


def tables(rng: random.Random, directory: Path) -> dict[str, str]:
    """The per-seed table files: an access table and an rbl_reply_maps table."""
    access = directory / "access"
    keys = rng.sample(ACCESS_KEYS, rng.randint(1, 4))
    access.write_text("".join(f"{k} {rng.choice(ACTIONS).format(k=k)}\n" for k in keys))
    replies = directory / "rbl_replies"
    names = rng.sample([*LISTS, *RHS_LISTS], rng.randint(1, 4))
    replies.write_text("".join(f"{n} {rng.choice(MAP_TEMPLATES)}\n" for n in names))
    return {"access": str(access), "replies": str(replies)}


def script(seed: int, directory: Path) -> tuple[dict[str, str], dns_support.Sessions]:
    rng = random.Random(seed)
    files = tables(rng, directory)
    settings = {"mynetworks": "127.0.0.1/32", "smtpd_delay_reject": rng.choice(["yes", "no"])}
    for param, pool in STAGES.items():
        chosen = [_fill(rng, item, files) for item in rng.sample(pool, rng.randint(0, 4))
                  if not ("{broken}" in item and rng.random() < 0.7)]
        while chosen and chosen[-1] == "warn_if_reject":
            chosen.pop()
        settings[param] = ", ".join(chosen)
    for name, values in OPTIONS.items():
        if rng.random() < 0.3:
            settings[name] = rng.choice(values)
    if rng.random() < 0.5:
        settings["rbl_reply_maps"] = f"texthash:{files['replies']}"
    if rng.random() < 0.3:
        settings["default_rbl_reply"] = rng.choice(TEMPLATES)
    return settings, [session(rng) for _ in range(4)]


def session(rng: random.Random) -> tuple[str, list[str]]:
    lines = []
    if rng.random() < 0.9:
        roll = rng.random()
        helo = rng.choice(ODD_HELOS) if roll < 0.3 else \
            _vary(rng, rng.choice(ODD_UTF8)) if roll < 0.4 else _vary(rng, rng.choice(HOSTS))
        lines.append(f"{rng.choice(['EHLO', 'HELO'])} {helo}")
    for _ in range(rng.randint(1, 2)):
        pool = ODD_UTF8 if rng.random() < 0.1 else DOMAINS
        sender = "" if rng.random() < 0.1 else f"{rng.choice(LOCALS)}@{_vary(rng, rng.choice(pool))}"
        utf8 = " SMTPUTF8" if rng.random() < 0.7 and lines and lines[0][0] == "E" else ""
        lines.append(f"MAIL FROM:<{sender}>{utf8}")
        for i in range(rng.randint(1, 3)):
            domain = "example.test" if rng.random() < 0.2 else \
                rng.choice(ODD_UTF8 if rng.random() < 0.1 else DOMAINS)
            lines.append(f"RCPT TO:<{'alice' if i == 0 else f'u{i}'}@{_vary(rng, domain)}>")
        lines.append("RSET")
    return rng.choice(SOURCES), [*lines, "QUIT"]


SEEDS = seeds(os.environ.get("MAILGATE_DNS_RANDOM_SEEDS", "1 2 3 4"))


@pytest.fixture(scope="module")
def dns154() -> Iterator[str]:
    yield from dns_support.serve_on_53(ADDRESS, ZONES)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory, dns154: str
            ) -> Iterator[reference.Instance]:
    yield from dns_support.reference_resolving_at(REFERENCE, tmp_path_factory.mktemp("dnsrandom"),
                                                  ADDRESS, free_port())


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
def test_random_dns_dialogues(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                              dns154: str, seed: int, tmp_path: Path) -> None:
    settings, sessions = script(seed, tmp_path)
    base = reference.read_settings(BASE)
    skip = postfix.configure({**base, **settings, **ONE_PROCESS})
    want = dns_support.run(postfix.port, sessions, postfix.log, skip)
    server = server_factory(**{**base, **settings, **SAME_AS_REFERENCE,
                               "resolver_servers": dns154}).start()
    replies, log = dns_support.run(server.port, sessions, server.log_path)
    if os.environ.get("MAILGATE_SHOW"):
        print("\n".join(want[0] + want[1]))
    # mailgate's own list-error warnings (decision 0016) are left out
    problems = dns_support.differences(want, (replies, [x for x in log if LIST_ERROR not in x]))
    config = "\n".join(f"{k} = {v}" for k, v in settings.items())
    assert not problems, f"seed {seed}\n{config}\n" + "\n".join(problems)
