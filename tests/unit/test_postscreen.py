"""postscreen's parts without a network: the cache value format (Postfix's psc_*_tests), the
DNS list score (Postfix's own postscreen_dnsbl_test.c vectors), time formatting, the access
list, the settings' start-up checks and the built-in SMTP engine's replies and log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.config import Config
from mailgate.dns.rbl import parse_site
from mailgate.errors import ConfigError
from mailgate.maps import MapOptions, default_registry
from mailgate.maps.matchlist import HostAddrList
from mailgate.server.commands import ForbiddenCommands
from mailgate.server.postscreen import texts
from mailgate.server.postscreen.access import AccessList, Verdict
from mailgate.server.postscreen.dnsbl import Score, refused
from mailgate.server.postscreen.record import (
    DISABLED,
    NEW,
    cache_lifetime,
    new_tests,
    parse_tests,
    print_tests,
)
from mailgate.server.postscreen.record import Test as T
from mailgate.server.postscreen.settings import Action, PostscreenSettings
from mailgate.server.postscreen.smtpd import SmtpdTests, extract_addr, split_word
from mailgate.server.postscreen.state import ScreenState
from mailgate.smtp.protocol import ServerConnection

ALL = frozenset(T)
EARLY_ONLY = frozenset({T.PREGREET, T.DNSBL})
NOW = 1_796_281_057


# --- the cache value ----------------------------------------------------------------------------
def test_new_client_has_every_enabled_test_to_do() -> None:
    record = new_tests(EARLY_ONLY)
    assert record.todo == set(EARLY_ONLY) and record.new
    assert record.expire == [NEW] * 5


def test_cache_value_as_postfix_writes_it() -> None:
    """A client that passed pregreet (1 day) and the DNS lists (60 s), with the deep tests
    off: Postfix 3.7.11 wrote `1796367500;1796281160;1;1;1` for it."""
    record = new_tests(EARLY_ONLY)
    record.passes(T.PREGREET, NOW + 86443)
    record.passes(T.DNSBL, NOW + 103)
    assert print_tests(record, EARLY_ONLY) == "1796367500;1796281160;1;1;1"


def test_cache_value_read_back() -> None:
    """`0` for a test never passed (DNSBL rank over the threshold, ignored) and `1` for one
    disabled: what is to do depends on what is enabled now."""
    record = parse_tests("1796367498;0;1;1;1", NOW, EARLY_ONLY)
    assert record.todo == {T.DNSBL} and record.new
    record = parse_tests("1796367498;1796367498;1;1;1", NOW, EARLY_ONLY)
    assert record.todo == set() and not record.new
    record = parse_tests("1796367498;1796367498;1;1;1", NOW, ALL)  # deep tests turned on
    assert record.todo == {T.PIPELINING, T.NON_SMTP, T.BARE_NEWLINE}
    assert not record.new  # (`PASS OLD` when they pass: the client is not new)
    record = parse_tests("1796367498;1796367498;1;1;1", 1796367499, EARLY_ONLY)
    assert record.todo == set(EARLY_ONLY)  # both expired


def test_cache_value_of_an_older_postscreen_or_garbage() -> None:
    """Fields an older postscreen did not write count as disabled; sscanf stops at the
    first one that is not a number."""
    assert parse_tests("1796367498;1796367498", NOW, EARLY_ONLY).expire == \
        [1796367498, 1796367498, DISABLED, DISABLED, DISABLED]
    assert parse_tests("1796367498;x;5", NOW, EARLY_ONLY).expire == \
        [1796367498, DISABLED, DISABLED, DISABLED, DISABLED]
    assert parse_tests("", NOW, ALL).todo == set(ALL)


def test_cache_lifetime_follows_postfix_cleanup() -> None:
    record = parse_tests("1796367500;1796281160;1;1;1", NOW, EARLY_ONLY)
    # kept until the first enabled test has been expired for the retention time
    assert cache_lifetime(record, EARLY_ONLY, NOW, 7 * 86400, 43200) == 1796281160 - NOW \
        + 7 * 86400
    record = parse_tests("1796367498;0;1;1;1", NOW, EARLY_ONLY)  # a test never passed
    assert cache_lifetime(record, EARLY_ONLY, NOW, 7 * 86400, 43200) == 43200


# --- the DNS list score (postscreen_dnsbl_test.c) -------------------------------------------------
def _sites(spec: str) -> list:  # type: ignore[type-arg]
    """A domain's entries as postscreen keeps them: the last one first."""
    return [parse_site(s.strip(), weighted=True) for s in reversed(spec.split(","))]


@pytest.mark.parametrize(("spec", "answer", "score"), [
    ("zen.spamhaus.org", "127.0.0.2 127.0.0.4 127.0.0.10", 1),
    ("zen.spamhaus.org, zen.spamhaus.org", "127.0.0.2 127.0.0.4 127.0.0.10", 2),
    ("zen.spamhaus.org", "", 0),
    ("zen.spamhaus.org*3, zen.spamhaus.org", "127.0.0.2 127.0.0.4 127.0.0.10", 4),
    ("zen.spamhaus.org, zen.spamhaus.org*3", "127.0.0.2 127.0.0.4 127.0.0.10", 4),
    ("zen.spamhaus.org=127.0.0.10*3, zen.spamhaus.org", "127.0.0.2 127.0.0.4 127.0.0.10", 4),
    ("zen.spamhaus.org, zen.spamhaus.org=127.0.0.10*3", "127.0.0.2 127.0.0.4 127.0.0.10", 4),
    ("zen.spamhaus.org=127.0.0.[1..255]*3, zen.spamhaus.org=127.0.0.3*-1",
     "127.0.0.3 127.0.0.10", 2),
    ("zen.spamhaus.org=127.0.0.[1..255]*3, zen.spamhaus.org=127.0.0.3*-1", "127.0.0.10", 3),
])
def test_single_list_scores(spec: str, answer: str, score: int) -> None:
    total = Score(3600)
    total.add(_sites(spec), "zen.spamhaus.org", answer.split(), 60)
    assert total.total == score
    assert total.ttl(60) == 60


@pytest.mark.parametrize(("sites", "answers", "ttl", "score"), [
    ("zen.spamhaus.org, foo.example.org",
     {"foo.example.org": ("127.0.0.10", 60), "zen.spamhaus.org": ("127.0.0.10", 60)}, 60, 2),
    ("zen.spamhaus.org, foo.example.org",
     {"foo.example.org": ("", 62), "zen.spamhaus.org": ("127.0.0.10", 61)}, 61, 1),
    ("zen.spamhaus.org, foo.example.org",
     {"foo.example.org": ("127.0.0.10", 62), "zen.spamhaus.org": ("", 61)}, 62, 1),
    ("zen.spamhaus.org, foo.example.org",
     {"foo.example.org": ("", 62), "zen.spamhaus.org": ("", 61)}, 61, 0),
    ("list.dnswl.org=127.0.[0..255].[1..3]*-2, foo.example.org",
     {"foo.example.org": ("127.0.0.10", 62), "list.dnswl.org": ("127.0.5.2", 61)}, 61, -1),
])
def test_several_lists_score_and_ttl(sites: str, answers: dict[str, tuple[str, int]],
                                     ttl: int, score: int) -> None:
    by_domain: dict[str, list] = {}  # type: ignore[type-arg]
    for spec in sites.split(","):
        site = parse_site(spec.strip(), weighted=True)
        by_domain.setdefault(site.domain, []).insert(0, site)
    total = Score(3600)
    for domain, (addrs, answer_ttl) in answers.items():
        total.add(by_domain[domain], domain, addrs.split(), answer_ttl)
    assert (total.total, total.ttl(1)) == (score, ttl)


def test_score_names_the_largest_contributor_and_ttl_bounds() -> None:
    total = Score(3600)
    total.add(_sites("bl2.example*1"), "bl2.example", ["127.0.0.2"], 300)
    total.add(_sites("bl.example*3"), "safe-name", ["127.0.0.2"], 300)
    total.add(_sites("bl3.example*3"), "bl3.example", ["127.0.0.2"], 30)
    assert (total.total, total.name) == (7, "safe-name")  # a tie keeps the first
    assert total.ttl(60) == 60  # never below postscreen_dnsbl_min_ttl
    empty = Score(3600)
    assert empty.ttl(60) == 3600  # nothing answered: postscreen_dnsbl_max_ttl


def test_query_refused_codes_are_never_listings() -> None:
    """Beyond Postfix: 127.255.255.0/24 answers report an error, not a listing."""
    assert refused("127.255.255.254") and refused("127.255.255.252")
    assert not refused("127.0.0.2") and not refused("192.0.2.1") and not refused("x")


# --- log texts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0"), (0.0003, "0"), (0.004, "0"), (0.005, "0.01"), (0.02, "0.02"),
    (0.123, "0.12"), (0.999, "1"), (1.0, "1"), (1.234, "1.2"), (1.5, "1.5"), (6.04, "6"),
    (9.96, "10"), (12.7, "13"), (300.2, "300")])
def test_times_as_format_tv_writes_them(seconds: float, text: str) -> None:
    assert texts.format_tv(seconds) == text


def test_log_lines_byte_for_byte() -> None:
    assert texts.pregreet(13, 0.0, "127.0.0.5", 59997, b"EHLO a.test\r\n") == \
        r"PREGREET 13 after 0 from [127.0.0.5]:59997: EHLO a.test\r\n"
    assert texts.hangup(3.01, "127.0.0.52", 47829, "tests after SMTP handshake") == \
        "HANGUP after 3 from [127.0.0.52]:47829 in tests after SMTP handshake"
    assert texts.listed("ALLOW", True, "1.2.3.4", 5) == "ALLOWLISTED [1.2.3.4]:5"
    assert texts.listed("DENY", False, "1.2.3.4", 5) == "BLACKLISTED [1.2.3.4]:5"
    assert texts.dnsbl_reply("550", "127.0.0.2", "bl.example") == \
        "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.example\r\n"
    assert texts.soften("550 5.5.1 Protocol error\r\n") == "450 4.5.1 Protocol error\r\n"


# --- settings -----------------------------------------------------------------------------------
def _config(tmp_path: Path, text: str = "") -> Config:
    (tmp_path / "main.cf").write_text("myhostname = mx.example.test\n" + text)
    return Config.load(str(tmp_path))


def test_defaults_are_postfix_37(tmp_path: Path) -> None:
    s = PostscreenSettings.from_config(_config(tmp_path))
    assert (s.greet_wait, s.greet_ttl, s.greet_action) == (6, 86400, Action.IGNORE)
    assert (s.dnsbl_threshold, s.dnsbl_allowlist_threshold, s.dnsbl_min_ttl,
            s.dnsbl_max_ttl, s.dnsbl_timeout) == (1, 0, 60, 3600, 10)
    assert (s.pipelining_action, s.non_smtp_command_action, s.bare_newline_action,
            s.denylist_action) == (Action.ENFORCE, Action.DROP, Action.IGNORE, Action.IGNORE)
    assert (s.pipelining_ttl, s.cache_retention_time, s.cache_cleanup_interval) == \
        (30 * 86400, 7 * 86400, 12 * 3600)
    assert (s.command_count_limit, s.command_time_limit, s.client_connection_count_limit) \
        == (20, 300, 50)
    assert s.access_list == ("permit_mynetworks",) and s.respectful_logging
    assert s.cache_map.startswith("btree:") and s.cache_map.endswith("/postscreen_cache")
    assert s.min_ttl == 60


def test_old_names_still_work(tmp_path: Path) -> None:
    s = PostscreenSettings.from_config(_config(tmp_path, "postscreen_blacklist_action = drop\n"
                                                          "postscreen_dnsbl_whitelist_threshold "
                                                          "= -2\ncompatibility_level = 2\n"))
    assert s.denylist_action is Action.DROP and s.dnsbl_allowlist_threshold == -2
    assert not s.respectful_logging


@pytest.mark.parametrize(("text", "error"), [
    ("postscreen_greet_action = block\n", "bad postscreen_greet_action value: block"),
    ("postscreen_dnsbl_sites = bl.example*x\n", 'bad DNSBL weight factor "x"'),
    ("postscreen_dnsbl_sites = bl.example=127.0.0.300\n", "bad DNSBL filter syntax"),
    ("postscreen_dnsbl_sites = bl..example\n", 'bad DNSBL domain name "bl..example"'),
])
def test_bad_values_stop_start_up(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        PostscreenSettings.from_config(_config(tmp_path, text))


# --- the access list ----------------------------------------------------------------------------
def test_access_list(tmp_path: Path) -> None:
    registry = default_registry(MapOptions())
    table = tmp_path / "access.cidr"
    table.write_text("192.0.2.0/24 reject\n198.51.100.1 permit\n198.51.100.2 dunno\n"
                     "198.51.100.3 cidr:/etc/x\n198.51.100.4 frobnicate\n")
    warnings: list[str] = []
    mynetworks = HostAddrList.build(("127.0.0.0/8",), registry)
    access = AccessList((f"permit_mynetworks, cidr:{table}", "reject"), registry, mynetworks,
                        warnings.append)
    assert access.evaluate("127.0.0.1") is Verdict.ALLOW
    assert access.evaluate("192.0.2.9") is Verdict.DENY
    assert access.evaluate("198.51.100.1") is Verdict.ALLOW
    assert access.evaluate("198.51.100.2") is Verdict.DENY  # a table's dunno: go on
    assert access.evaluate("203.0.113.1") is Verdict.DENY  # the last word
    assert access.evaluate("198.51.100.3") is Verdict.DENY  # nested table: ignored
    assert warnings[-1] == (f'table cidr:{table}: lookup result "cidr:/etc/x" is not allowed '
                            "-- ignoring remainder of access list")
    assert access.evaluate("198.51.100.4") is Verdict.ERROR
    assert warnings[-1] == (f"cidr:{table}: unknown command: frobnicate -- ignoring the "
                            "remainder of this access list")
    assert AccessList(("dunno", "reject"), registry, mynetworks, warnings.append).evaluate(
        "203.0.113.1") is Verdict.DUNNO  # the list's own dunno stops it


# --- the built-in SMTP engine -------------------------------------------------------------------
def _engine(tmp_path: Path, text: str = "", dummy: bool = True,
            failed: set[T] | None = None) -> tuple[SmtpdTests, list[str]]:
    settings = PostscreenSettings.from_config(_config(tmp_path, text))
    lines: list[str] = []
    enabled = ALL - {T.DNSBL}  # (no postscreen_dnsbl_sites)
    record = new_tests(enabled)
    record.passes(T.PREGREET, NOW + 10)
    record.failed |= failed or set()
    state = ScreenState("192.0.2.7", 4321, record, settings, enabled, lines.append)
    tests = SmtpdTests(state, ForbiddenCommands.build(settings.forbidden_commands,
                                                      default_registry(MapOptions())),
                       lambda: float(NOW), dummy)
    return tests, lines


def _lines(data: bytes) -> list:  # type: ignore[type-arg]
    conn = ServerConnection()
    conn.receive_data(data)
    out = []
    while True:
        event = conn.next_event()
        if not hasattr(event, "line"):
            return out
        out.append((event, conn.buffered(100)))


def test_engine_dialogue_rejects_every_recipient(tmp_path: Path) -> None:
    tests, lines = _engine(tmp_path, "postscreen_pipelining_enable = yes\n")
    tests.state.enforce(texts.PROTOCOL_ERROR_ENFORCE)
    assert tests.start() == "220 mx.example.test ESMTP mailgate\r\n"
    replies = [tests.line(cmd, b"").reply for cmd, _ in _lines(
        b"EHLO c.test\r\nMAIL FROM:<\"a b\"@c.test> SIZE=10\r\nRCPT TO:<@r.test:u@example.test>"
        b"\r\nVRFY u\r\nETRN x\r\nAUTH PLAIN\r\nRSET\r\nQUIT\r\n")]
    assert replies == [
        "250-mx.example.test\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
        "250 2.1.0 Ok\r\n", "550 5.5.1 Protocol error\r\n", "550 5.5.1 Protocol error\r\n",
        "458 Unable to queue messages\r\n", "502 5.5.2 Error: command not recognized\r\n",
        "250 2.0.0 Ok\r\n", "221 2.0.0 Bye\r\n"]
    assert lines == ["NOQUEUE: reject: RCPT from [192.0.2.7]:4321: 550 5.5.1 Protocol error; "
                     "from=<a b@c.test>, to=<u@example.test>, proto=ESMTP, helo=<c.test>"]
    assert tests.state.noforward and tests.state.final_reply == texts.BYE


def test_pipelining_non_smtp_and_bare_newline_log_lines(tmp_path: Path) -> None:
    tests, lines = _engine(tmp_path, "postscreen_pipelining_enable = yes\n"
                                     "postscreen_non_smtp_command_enable = yes\n"
                                     "postscreen_non_smtp_command_action = enforce\n"
                                     "postscreen_bare_newline_enable = yes\n")
    events = _lines(b"ehlo c.test\nMAIL FROM:<a@c.test>\r\nSubject:  hi there\r\n")
    steps = [tests.line(cmd, pending) for cmd, pending in events]
    assert lines == [
        "BARE NEWLINE from [192.0.2.7]:4321 after ehlo c.test",
        r"COMMAND PIPELINING from [192.0.2.7]:4321 after ehlo: MAIL FROM:<a@c.test>\r\n"
        r"Subject:  hi there\r\n",
        "NON-SMTP COMMAND from [192.0.2.7]:4321 after MAIL: Subject:  hi there"]
    assert steps[2].reply == "502 5.5.2 Error: command not recognized\r\n"
    record = tests.state.record
    assert record.passed == {T.PREGREET, T.BARE_NEWLINE}  # ignore: passed for now
    assert record.expire[T.BARE_NEWLINE] == NOW + 60  # psc_min_ttl
    assert record.failed == {T.PIPELINING, T.NON_SMTP}
    assert record.expire[T.PIPELINING] == DISABLED


def test_watching_a_session_passes_at_rcpt(tmp_path: Path) -> None:
    """Beyond Postfix: watching smtpd, postscreen answers nothing a client may send, and
    the client passes at its first RCPT."""
    tests, lines = _engine(tmp_path, "postscreen_pipelining_enable = yes\n"
                                     "postscreen_non_smtp_command_enable = yes\n"
                                     "postscreen_bare_newline_enable = yes\n", dummy=False)
    steps = [tests.line(cmd, b"") for cmd, _ in _lines(
        b"EHLO c.test\r\nXYZZY\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<u@example.test>\r\n")]
    assert [s.reply for s in steps] == ["", "502 5.5.2 Error: command not recognized\r\n",
                                        "", ""]
    assert steps[-1].passed and not lines
    assert tests.state.record.all_passed()
    assert tests.state.record.expire[T.PIPELINING] == NOW + 30 * 86400
    assert tests.state.conclude() == f"{NOW + 10};1;{NOW + 30 * 86400};" \
        f"{NOW + 30 * 86400};{NOW + 30 * 86400}"
    assert lines == ["PASS NEW [192.0.2.7]:4321"]


def test_enforce_failure_turns_the_watcher_into_the_engine(tmp_path: Path) -> None:
    tests, lines = _engine(tmp_path, "postscreen_pipelining_enable = yes\n", dummy=False)
    steps = [tests.line(cmd, pending) for cmd, pending in _lines(
        b"HELO c.test\r\nMAIL FROM:<a@c.test>\r\n")]
    assert steps[0].reply == "250 mx.example.test\r\n" and tests.dummy
    assert steps[1].reply == "250 2.1.0 Ok\r\n"
    (cmd, _), = _lines(b"DATA\r\n")
    step = tests.line(cmd, b"")
    assert step.drop and step.reply == "554 5.5.1 Error: no valid recipients\r\n"
    assert lines[-1] == "DATA without valid RCPT from [192.0.2.7]:4321"


def test_command_count_and_length_limits(tmp_path: Path) -> None:
    tests, lines = _engine(tmp_path, "postscreen_command_count_limit = 2\n")
    replies = [tests.line(cmd, b"") for cmd, _ in _lines(b"NOOP\r\nFOO\r\nNOOP\r\n")]
    assert replies[-1].drop
    assert replies[-1].reply == "421 mx.example.test Service unavailable - try again later\r\n"
    assert lines == ["COMMAND COUNT LIMIT from [192.0.2.7]:4321 after UNIMPLEMENTED"]
    tests, lines = _engine(tmp_path)
    conn = ServerConnection(line_length_limit=10)
    conn.receive_data(b"HELO aaaaaaaaaaaa\r\n")
    step = tests.line(conn.next_event(), b"")  # type: ignore[arg-type]
    assert step.drop and lines == ["COMMAND LENGTH LIMIT from [192.0.2.7]:4321 after CONNECT"]


def test_engine_greets_no_client_that_talked_first(tmp_path: Path) -> None:
    tests, _ = _engine(tmp_path, failed={T.PREGREET})
    assert tests.start() == ""
    assert tests.state.record.todo >= {T.PIPELINING, T.NON_SMTP, T.BARE_NEWLINE}


@pytest.mark.parametrize(("text", "addr"), [
    ("<a@b.test>", "a@b.test"), (" <a@b.test> SIZE=1", "a@b.test"), ("a@b.test x", "a@b.test"),
    ('<"x y"@b.test>', "x y@b.test"), ("<a\\>b@c>", "a>b@c"), ("<@r1,@r2:u@d>", "u@d"),
    ("<>", ""), ("<a@b", "a@b")])
def test_addresses_as_postscreen_extracts_them(text: str, addr: str) -> None:
    assert extract_addr(text) == addr


def test_words_as_mystrtok_splits_them() -> None:
    assert split_word("  GET  / HTTP/1.0") == ("GET", " / HTTP/1.0")
    assert split_word("QUIT") == ("QUIT", "")
    assert split_word("   ") == (None, "")


def test_the_accept_process_does_not_greet_a_postscreen_listener() -> None:
    """postscreen sends the first line (its teaser) itself (decision 0049, 0065)."""
    import dataclasses

    from mailgate.acceptor import Greeter
    from mailgate.anvil import ConnectionTable

    greeter = Greeter(b"220 mx.example.test ESMTP\r\n", True, 100, 50, 0, 60.0)
    table = ConnectionTable()
    assert greeter.early(table, "192.0.2.1", 1, 1)
    assert not dataclasses.replace(greeter, screened=True).early(table, "192.0.2.1", 1, 1)
