"""The DNS layer against the test DNS server: answers, "not found" versus "try again", the
TTL cache with a driven clock, in-flight sharing; ip_match patterns; the connect prefetch plan."""

from __future__ import annotations

import asyncio

import pytest

from conftest import SHARED
from mailgate.dns.lookup import STOP_OK, DnsLookup
from mailgate.dns.names import HostsFile, NameService
from mailgate.dns.rbl import PatternError, list_error, parse_ip_pattern, parse_site, reverse_query
from mailgate.dns.resolver import NOTFOUND, NULLMX, OK, RETRY, Resolver
from mailgate.engine.connect import Prefetch, lookup_client
from mailgate.engine.settings import EngineSettings

UTIL = SHARED / "postfix" / "tests" / "util"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answers_and_failures(dns_server: str) -> None:
    async def run() -> None:
        resolver = Resolver([dns_server], timeout=1)
        try:
            await answers(resolver)
        finally:
            resolver.close()

    async def answers(resolver: Resolver) -> None:
        spike = await resolver.query("spike.porcupine.org", "A")
        assert (spike.status, [r.data for r in spike.records]) == (OK, ["168.100.3.2"])
        missing = await resolver.query("nxdomain.porcupine.org", "A")
        assert (missing.status, missing.nxdomain, missing.error) == (NOTFOUND, True,
                                                                     "Host not found")
        nodata = await resolver.query("spike.porcupine.org", "MX")
        assert (nodata.status, nodata.nxdomain) == (NOTFOUND, False)
        assert (await resolver.query("x.timeout.mailgate.test", "A")).status == RETRY
        assert (await resolver.query("x.servfail.mailgate.test", "A")).status == RETRY
        txt = await resolver.query("2.0.0.127.dnsbltest.porcupine.org", "TXT")
        assert txt.records[0].data == "DNS blocklist test"
        big = await resolver.query("big.mailgate.test", "TXT")  # truncated UDP, then TCP
        assert big.records[0].data == "a" * 250  # the first string only, as Postfix keeps it
        alias = await resolver.query("alias.mailgate.test", "A")
        assert [r.data for r in alias.records] == ["127.0.0.10"]
        wild = await resolver.query("2.3.100.168.wild.porcupine.org", "A")
        assert wild.status == OK
        lookup = DnsLookup(resolver)
        assert (await lookup.lookup("nullmx.porcupine.org", "MX")).status == NULLMX
        both = await lookup.lookup_l("sixonly.mailgate.test", ("A", "AAAA", "MX"), STOP_OK)
        assert (both.status, [r.data for r in both.records]) == (OK, ["::1"])

    asyncio.run(run())


def test_cache_honours_ttl_and_negative_answers(dns_server: str) -> None:
    async def run() -> None:
        clock = Clock()
        resolver = Resolver([dns_server], timeout=1, clock=clock)
        try:
            await cache(resolver, clock)
        finally:
            resolver.close()

    async def cache(resolver: Resolver, clock: Clock) -> None:
        await asyncio.gather(*(resolver.query("fist.porcupine.org", "A") for _ in range(5)))
        assert resolver.queries == 1  # five askers in flight, one query
        await resolver.query("fist.porcupine.org", "A")
        await resolver.query("nxdomain.porcupine.org", "A")
        await resolver.query("nxdomain.porcupine.org", "A")
        assert resolver.queries == 2  # both answers cached (the NXDOMAIN for the SOA minimum)
        clock.now += 61  # past the SOA minimum (60), not past the A record's TTL (300)
        await resolver.query("fist.porcupine.org", "A")
        await resolver.query("nxdomain.porcupine.org", "A")
        assert resolver.queries == 3
        clock.now += 300
        await resolver.query("fist.porcupine.org", "A")
        assert resolver.queries == 4

    asyncio.run(run())


@pytest.mark.parametrize(("addr", "name", "status", "warning"), [
    ("127.0.0.10", "good.mailgate.test", 2, ""),
    ("127.0.0.11", "unknown", 6, "hostname forged.mailgate.test does not resolve to address "
                                 "127.0.0.11"),
    ("127.0.0.12", "unknown", 5, ""),
    ("127.0.0.13", "unknown", 4, ""),
    ("127.0.0.14", "unknown", 5, "numeric hostname: 127.0.0.14"),
    ("127.0.0.1", "localhost", 2, ""),
])
def test_peer_name(dns_server: str, addr: str, name: str, status: int, warning: str) -> None:
    warnings: list[str] = []
    hosts = HostsFile({"localhost": ("127.0.0.1",)}, {"127.0.0.1": "localhost"})
    resolver = Resolver([dns_server], timeout=1)

    async def run() -> tuple[str, int]:
        try:
            found = await lookup_client(NameService(resolver, hosts), addr, 0, True,
                                        warnings.append)
            return found.name, found.name_status
        finally:
            resolver.close()

    assert asyncio.run(run()) == (name, status)
    assert warnings == ([warning] if warning else [])


def test_ip_match_vectors() -> None:
    """util/ip_match.{in,ref}: reply-address patterns, their errors and matches."""
    out = []
    for line in (UTIL / "ip_match.in").read_text().splitlines():
        words = line.split()
        out.append("> " + line)
        try:
            pattern = parse_ip_pattern(words[0])
        except PatternError as exc:
            out.append(f"Error: {exc}")
            continue
        out.append(f"Code: {pattern.text}")
        out += [f"Match {a}: {'yes' if pattern.match(a) else 'no'}" for a in words[1:]]
    assert out == (UTIL / "ip_match.ref").read_text().splitlines()


def test_sites_queries_and_list_errors() -> None:
    site = parse_site("zen.example=127.0.0.[2..11]*3", weighted=True)
    assert (site.spec, site.domain, site.weight) == ("zen.example=127.0.0.[2..11]", "zen.example", 3)
    assert site.pattern is not None and site.pattern.match("127.0.0.4")
    assert parse_site("wl.example*-2", weighted=True).weight == -2
    assert reverse_query("1.2.3.4") == "4.3.2.1"
    assert reverse_query("2001:db8::1") == ".".join(reversed("20010db8" + "0" * 23 + "1"))
    assert reverse_query("unknown") is None
    assert list_error("127.0.0.2") == ""
    assert "refused" in list_error("127.255.255.254")
    assert "outside" in list_error("192.0.2.1")


def test_prefetch_plan() -> None:
    """Every list a client's address or name will be asked about, found through classes."""
    settings = EngineSettings(
        lists={"client": ("reject_rbl_client", "zen.example=127.0.0.2", "strict"),
               "recipient": ("reject_dnsbl_score", "reject_rhsbl_client", "rhs.example",
                             "reject_rhsbl_sender", "shs.example"),
               "sender": ("reject_unknown_sender_domain",)},
        classes={"strict": ("permit_dnswl_client", "wl.example")},
        dnsbl_sites=(parse_site("bl.example*2", weighted=True),))
    plan = Prefetch.plan(settings)
    assert set(plan.by_address) == {"zen.example", "wl.example", "bl.example"}
    assert plan.by_name == ("rhs.example",)
    assert (plan.by_sender, plan.sender_domain, plan.helo_host) == (("shs.example",), True, False)


def test_wire_codec_against_dnspython() -> None:
    """Our query encoder and reply decoder agree with dnspython on the test zone's answers:
    records, CNAME chains, NXDOMAIN with SOA, null MX, TXT, wildcard, compression."""
    import dns.message
    import dns.rdatatype

    from mailgate.dns import wire
    from support.dns import ZONES
    from support.dnsserver import Authority, load_zones

    authority = Authority(load_zones(ZONES), set(), set())
    names = ["spike.porcupine.org", "nullmx.porcupine.org", "alias.mailgate.test",
             "2.0.0.127.dnsbltest.porcupine.org", "nxdomain.porcupine.org", "porcupine.org",
             "1.2.3.4.wild.porcupine.org", "backup.porcupine.org", "sixonly.mailgate.test",
             "10.0.0.127.in-addr.arpa", "www.porcupine.org"]
    for name in names:
        for rdtype in ("A", "AAAA", "MX", "NS", "PTR", "TXT"):
            q = wire.question(name, rdtype)
            query = dns.message.from_wire(wire.query(4242, q))
            assert (query.id, str(query.question[0].name), query.edns) == (4242, name + ".", 0)
            assert dns.rdatatype.to_text(query.question[0].rdtype) == rdtype
            reply = authority.answer(query)
            assert reply is not None
            ours = wire.parse(reply.to_wire())
            assert (ours.id, ours.rcode) == (4242, reply.rcode())
            assert ours.question.lower() == q.lower()
            expected = []
            for rrset in reply.answer:
                for rdata in rrset:
                    text = rdata.to_text()
                    if rrset.rdtype == dns.rdatatype.TXT:
                        text = rdata.strings[0].decode()
                    elif rrset.rdtype == dns.rdatatype.MX:
                        text = rdata.exchange.to_text(omit_final_dot=True)
                        text = "" if text in ("@", ".") else text
                    elif rrset.rdtype in (dns.rdatatype.CNAME, dns.rdatatype.NS,
                                          dns.rdatatype.PTR):
                        text = rdata.target.to_text(omit_final_dot=True)
                    expected.append((rrset.name.to_text(omit_final_dot=True), rrset.rdtype,
                                     rrset.ttl, text))
            assert sorted((r.name, r.type, r.ttl, r.data) for r in ours.answer) == \
                sorted(expected)
            soa = [r for r in ours.authority if r.type == wire.TYPES["SOA"]]
            if reply.authority:
                assert soa and soa[0].minimum == reply.authority[0][0].minimum


@pytest.mark.parametrize("name", ["", "a..b", "x" * 64 + ".test", "ümlaut.test",
                                  ".".join(["abcdefghij"] * 26)])
def test_wire_rejects_names_dns_cannot_carry(name: str) -> None:
    from mailgate.dns import wire

    if name == "":
        assert wire.encode_name(name) == b"\x00"
        return
    with pytest.raises(wire.WireError):
        wire.encode_name(name)


def test_txt_text_is_what_postfix_keeps() -> None:
    """dns_get_rr(): a TXT record's first string, bytes outside printable ASCII as spaces."""
    from mailgate.dns.wire import txt_text

    assert txt_text(b"\x05first\x07 second") == "first"
    assert txt_text(b"\x08caf\xc3\xa9\tx!") == "caf   x!"
    assert txt_text(b"\x00") == txt_text(b"") == ""


def test_txt_reason_joins_records_up_to_500_characters() -> None:
    """rbl_pagein(): " / " between records, 500 characters at most, no separator once three
    or fewer are left."""
    from mailgate.dns.rbl import txt_reason

    assert txt_reason(["one", "two"]) == "one / two"
    long = txt_reason(["L" * 250, "M" * 250, "N" * 200])
    assert long == "L" * 250 + " / " + "M" * 247 and len(long) == 500
    assert txt_reason(["x" * 497, "yyyy"]) == "x" * 497 + "yyy"


@pytest.mark.parametrize(("name", "asked"), [
    ("mx-ok.dom.test", True), ("mx-ok.dom.test.", False), (".", True), ("1.2.3.4", False),
    ("*.wild.dom.test", True), ("a.*.test", False), ("bücher.dom.test", False),
    ("-bad.dom.test", False), ("a..b", False), ("under_score.dom.test", True)])
def test_names_dns_lookup_asks_about(name: str, asked: bool) -> None:
    """dns_lookup_x(): an address or an invalid host name (a trailing dot included) is "not
    found" without a query; the HELO `mx-ok.dom.test.` is so "Host not found" (issue 16)."""
    from mailgate.dns.lookup import lookup_name_ok

    assert lookup_name_ok(name) is asked

    async def run() -> None:
        resolver = Resolver(["127.0.0.1:9"], timeout=0.2)  # nothing answers there
        try:
            result = await DnsLookup(resolver).lookup(name, "A")
        finally:
            resolver.close()
        if not asked:
            assert (result.status, result.error, resolver.queries) == (NOTFOUND, "Host not found", 0)
            assert result.why == f"Name service error for {name}: invalid host or domain name"

    asyncio.run(run())


def test_rbl_cache_is_a_small_lru_with_an_age() -> None:
    from mailgate.dns.rbl import SOFT, Paged, RblCache

    clock = Clock()
    cache = RblCache(size=2, max_age=10, clock=clock)
    cache.put("a", Paged(("127.0.0.2",), None))
    cache.put("b", SOFT)
    assert cache.get("a") == (True, Paged(("127.0.0.2",), None))
    cache.put("c", None)  # "b" is the least recently used
    assert [cache.get(k)[0] for k in "abc"] == [True, False, True]
    clock.now += 10
    assert cache.get("a") == (False, None)
