"""main.cf syntax, $name expansion, typed values and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.config import Config
from mailgate.config.maincf import expand, logical_lines, parse_main_cf, split_list
from mailgate.errors import ConfigError


def test_logical_lines_join_continuations_and_skip_comments() -> None:
    text = "a = 1\n# comment\nb = x,\n  y\n\n  # inner comment\n  z\nc=3\n"
    assert list(logical_lines(text)) == [(1, "a = 1"), (3, "b = x,  y  z"), (8, "c=3")]


def test_parse_warns_about_overriding_and_keeps_last() -> None:
    entries, warnings = parse_main_cf("x = 1\nx = 2\n", "main.cf")
    assert [e.value for e in entries if e.name == "x"][-1] == "2"
    assert warnings == ["main.cf, line 2: overriding earlier entry: x=1"]


def test_missing_equals_is_fatal_with_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"main.cf, line 2: missing '=' after attribute name"):
        parse_main_cf("a = 1\nbogus line\n", "main.cf")


@pytest.mark.parametrize(("text", "expected"), [
    ("$a", "A"), ("${a}", "A"), ("$(a)", "A"), ("$a.suffix", "A.suffix"),
    ("$asuffix", ""), ("$$a", "$a"), ("${a?yes}", "yes"), ("${e?yes}", ""),
    ("${a:no}", ""), ("${e:no}", "no"), ("${a?{x y}:{z}}", "x y"), ("${e?{x y}:{z}}", "z"),
    ("${{$n} == {3} ? {eq} : {ne}}", "eq"), ("${{$n} < {10} ? {lt} : {ge}}", "lt"),
    ("${{3.7} <level {3.6} ? {old} : {new}}", "new"), ("$b", "A-A"),
])
def test_expansion(text: str, expected: str) -> None:
    values = {"a": "A", "e": "", "n": "3", "b": "$a-${a}"}
    assert expand(text, values.get) == expected


def test_split_list_protects_braces() -> None:
    assert split_list("a, b c,{d e}, inline:{{x=1}, y=2}") == [
        "a", "b", "c", "{d e}", "inline:{{x=1}, y=2}"]


def _cfg(tmp_path: Path, text: str, *overrides: str) -> Config:
    (tmp_path / "main.cf").write_text(text)
    return Config.load(str(tmp_path), overrides)


def test_typed_values_and_defaults(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "smtpd_timeout = 5m\nmyhostname = mx.example\n"
                         "smtpd_delay_reject = no\n", "message_size_limit=100")
    assert cfg.get_time("smtpd_timeout") == 300
    assert cfg.get_bool("smtpd_delay_reject") is False
    assert cfg.get_size("message_size_limit") == 100
    assert cfg.get_int("smtpd_hard_error_limit") == 20
    assert cfg.get_str("smtpd_banner") == "mx.example ESMTP mailgate"
    assert cfg.get_list("mydestination") == ("mx.example", "localhost.example", "localhost")
    assert cfg.get_list("smtpd_relay_restrictions") == (
        "permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination")
    assert cfg.get_bool("smtpd_relay_before_recipient_restrictions") is True


def test_stress_conditional_default(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "stress = yes\n")
    assert cfg.get_int("smtpd_hard_error_limit") == 1
    assert cfg.get_time("smtpd_timeout") == 10


@pytest.mark.parametrize(("line", "message"), [
    ("smtpd_hard_error_limit = many", "line 2: bad numerical configuration: "
                                      "smtpd_hard_error_limit = many"),
    ("smtpd_hard_error_limit = 0", "line 2: invalid smtpd_hard_error_limit parameter value 0 < 1"),
    ("smtpd_delay_reject = perhaps", "line 2: bad boolean configuration: smtpd_delay_reject"),
    ("smtpd_timeout = 5x", "line 2: bad time configuration: smtpd_timeout = 5x"),
    ("smtpd_listen = nowhere", "line 2: bad smtpd_listen address"),
])
def test_bad_values_name_file_line_and_problem(tmp_path: Path, line: str, message: str) -> None:
    from mailgate.config.settings import SmtpdSettings

    with pytest.raises(ConfigError) as info:
        SmtpdSettings.from_config(_cfg(tmp_path, f"# first\n{line}\n"))
    assert str(info.value).startswith(str(tmp_path / "main.cf"))
    assert message in str(info.value)


def test_unknown_parameters_are_warned_unless_referenced(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "my_own = 1\nused = 2\nrelay_domains = $used\n"
                         "smtpd_restriction_classes = cls\ncls = reject\n")
    assert cfg.unused_parameters() == [f"{tmp_path / 'main.cf'}, line 1: unused parameter: my_own=1"]


def test_postconf_modes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "mydestination = $myhostname,\n    localhost\nmyhostname = mx.example\n")
    assert cfg.postconf_lines("n") == ["mydestination = $myhostname, localhost",
                                       "myhostname = mx.example"]
    assert cfg.postconf_lines("d", ["smtpd_soft_error_limit"]) == ["smtpd_soft_error_limit = 10"]
    assert cfg.postconf_lines("", ["mydestination"]) == ["mydestination = $myhostname, localhost"]
    with pytest.raises(ConfigError):
        cfg.postconf_lines("", ["no_such_parameter"])


@pytest.mark.parametrize(("line", "message"), [
    ("unknown_address_tempfail_action = sometimes", "line 2: bad configuration (expected "
     "defer_if_permit or defer): unknown_address_tempfail_action = sometimes"),
    ("smtpd_dnsbl_sites = zen.example=127.0.0.[1-2]*2", 'line 2: bad DNS list '
     'zen.example=127.0.0.[1-2]*2: need ";" or "]" at "127.0.0.[1>-<2]"'),
    ("smtpd_dnsbl_sites = zen.example*x", "line 2: bad DNS list zen.example*x: bad weight"),
])
def test_bad_dns_settings_name_file_line(tmp_path: Path, line: str, message: str) -> None:
    from mailgate.engine.settings import EngineSettings

    with pytest.raises(ConfigError) as info:
        EngineSettings.from_config(_cfg(tmp_path, f"# first\n{line}\n"))
    assert str(info.value).startswith(str(tmp_path / "main.cf"))
    assert message in str(info.value)


def test_bad_resolver_server_names_file_line(tmp_path: Path) -> None:
    from mailgate.app import build_engine, build_resolver
    from mailgate.maps import default_registry

    cfg = _cfg(tmp_path, "# first\nresolver_servers = 127.0.0.1:5353 [::1:53\n")
    registry = default_registry()
    with pytest.raises(ConfigError) as info:
        build_engine(cfg, registry, build_resolver(cfg, registry, frozenset()), print)
    assert str(info.value) == (f"{tmp_path / 'main.cf'}, line 2: bad DNS server address: "
                               "'[::1:53' (use host, host:port or [ipv6]:port)")
