"""master.cf: parsing as Postfix 3.7 does, the smtpd services mailgate runs, and `-o` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.config import Config
from mailgate.config.mastercf import (
    MasterCf,
    load_master_cf,
    parse_master_cf,
    postscreen_config,
    service_config,
    smtpd_services,
    split_quoted,
)
from mailgate.config.postconf_master import format_entry, show_parameters
from mailgate.errors import ConfigError

STOCK_FILES = (Path("/usr/share/postfix/master.cf.dist"), Path("/etc/postfix/master.cf"))
SUBMISSION = """\
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_recipient_restrictions = permit_sasl_authenticated, reject }
127.0.0.1:submissions inet n  -       y       -       -       smtpd
  -o syslog_name=postfix/submissions -o smtpd_tls_wrappermode=yes
smtps     inet  n       -       y       -       -       smtpd
[::1]:2526 inet n - n - - smtpd -v
"""


def _master(text: str) -> MasterCf:
    return parse_master_cf(text, "/etc/mailgate/master.cf")


def _stock() -> str:
    for path in STOCK_FILES:
        if path.exists():
            return path.read_text()
    pytest.skip("no stock master.cf on this machine")


def test_continuations_comments_and_defaults() -> None:
    master = _master("# head\n\nsmtp inet n - y - - smtpd\n# inner\n\t-o a=1\n"
                     "  -o b = 2\nqmgr unix n - n 300 1 qmgr\n")
    smtp, qmgr = master.entries
    assert smtp.fields == ("smtp", "inet", "n", "-", "y", "-", "-", "smtpd")
    assert smtp.args == ("-o", "a=1", "-o", "b", "=", "2")
    assert smtp.overrides == (("a", "1"),)  # "-o b" has no '=': not a parameter
    assert smtp.origin == "/etc/mailgate/master.cf:3"
    assert qmgr.origin == "/etc/mailgate/master.cf:7" and qmgr.wakeup == "300"


def test_braces_and_option_splitting() -> None:
    (entry,) = _master("s inet n - y - - smtpd -o { a = b  c } -o{x=y} -oz=w -vo q=r "
                       "-Do{g = h i} -- {j k}\n").entries
    assert entry.args == ("-o", "a=b  c", "-o", "x=y", "-o", "z=w", "-v", "-o", "q=r", "-D",
                          "-o", "g=h i", "--", "j k")
    assert entry.overrides == (("a", "b  c"), ("x", "y"), ("z", "w"), ("q", "r"), ("g", "h i"))
    assert split_quoted("a {b c} d{e f}g") == ["a", "{b c}", "d{e f}g"]


def test_brace_errors_are_warnings_as_in_postconf() -> None:
    master = _master("s inet n - y - - smtpd -o {x={y}}z -o { a  b }\n")
    assert master.entries[0].args == ("-o", "x={y}", "-o", "a  b")
    assert master.warnings == (
        """/etc/mailgate/master.cf: syntax error after '}' in "{x={y}}z\"""",
        """/etc/mailgate/master.cf: missing '=' after attribute name: "a  b\"""")


@pytest.mark.parametrize(("line", "error"), [
    ("smtp inet n - y - -", "master.cf:2: bad field count"),
    ("smtp bogus n - y - - smtpd", 'master.cf:2: invalid type field "bogus" in "smtp bogus'),
    ("smtp inet x - y - - smtpd", 'invalid private field "x"'),
    ("smtp inet n yes y - - smtpd", 'invalid unpriv field "yes"'),
    ("smtp inet n - 1 - - smtpd", 'invalid chroot field "1"'),
    ("smtp inet n - y 1x - smtpd", 'invalid wakeup field "1x"'),
    ("smtp inet n - y 12?? - smtpd", 'invalid wakeup field "12??"'),
    ("smtp inet n - y - -1 smtpd", 'invalid process_limit field "-1"'),
])
def test_bad_lines_are_fatal_with_file_and_line(line: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("?", r"\?")):
        _master("# comment\n" + line + "\n")


def test_line_starting_with_whitespace_is_skipped_with_a_warning() -> None:
    master = _master("  smtp inet n - y - - smtpd\nx unix - - n ? 0 cleanup\n")
    assert [e.name for e in master.entries] == ["x"]
    assert "master.cf:1: logical line must not start with whitespace" in master.warnings[0]


def test_load_master_cf(tmp_path: Path) -> None:
    assert load_master_cf(str(tmp_path)) is None
    (tmp_path / "master.cf").write_text("smtp inet n - y - - smtpd\n")
    loaded = load_master_cf(str(tmp_path))
    assert loaded is not None and loaded.path == f"{tmp_path}/master.cf"


def test_stock_master_cf_with_submission_runs_the_smtpd_services() -> None:
    services = smtpd_services(_master(_stock() + SUBMISSION))
    assert [(s.name, s.host, s.port) for s in services] == [
        ("smtp", None, 25), ("submission", None, 587), ("127.0.0.1:submissions", "127.0.0.1", 465),
        ("smtps", None, 465), ("[::1]:2526", "::1", 2526)]
    submission = services[1]
    assert submission.overrides == (
        ("syslog_name", "postfix/submission"), ("smtpd_tls_security_level", "encrypt"),
        ("smtpd_recipient_restrictions", "permit_sasl_authenticated, reject"))
    assert submission.origin.endswith(f":{_stock().count(chr(10)) + 1}")


@pytest.mark.parametrize(("line", "why"), [
    ("smtp inet n - y - 1 postscreen", "service smtp: postscreen hands clients to service "
                                       "smtpd of type pass, which master.cf does not have"),
    ("smtpd pass - - y - - smtpd", "service smtpd: smtpd of type pass"),
    ("psc unix - - y - 1 postscreen", "postscreen as a unix service"),
    ("policy unix - n n - 0 spawn user=nobody argv=/bin/policy", "does not spawn"),
    ("628 inet n - y - - qmqpd", "QMQP"),
    ("x unix - - n - - frobnicate", "unknown command frobnicate"),
    ("2525 inet n - n - - cleanup", "cleanup as a inet service"),
    ("smtp inet n - y - - smtpd -S", "unsupported option: -S"),
    ("smtp inet n - y - - smtpd -o bare", 'invalid "-o bare" option value: missing'),
    ("smtp inet n - y - - smtpd extra", "unexpected argument: extra"),
    ("no-such-service-name inet n - y - - smtpd", "unknown service: no-such-service-name/tcp"),
    ("70000 inet n - y - - smtpd", "bad port: 70000"),
])
def test_services_mailgate_does_not_run_are_refused(line: str, why: str) -> None:
    master = _master("smtp inet n - y - - smtpd\n#postscreen commented out is fine\n" + line)
    with pytest.raises(ConfigError, match=f"^/etc/mailgate/master.cf:3: .*{why}"):
        smtpd_services(master)


POSTSCREEN = """\
smtp      inet  n       -       y       -       1       postscreen
  -o postscreen_greet_wait=3s
smtpd     pass  -       -       y       -       -       smtpd
  -o smtpd_client_restrictions=reject_unknown_client_hostname
dnsblog   unix  -       -       y       -       0       dnsblog
tlsproxy  unix  -       -       y       -       0       tlsproxy
"""


def test_postscreen_line_with_smtpd_pass_behind_it_is_one_screened_service(
        tmp_path: Path) -> None:
    """decision 0065: the postscreen line listens, its -o are postscreen's; the pass
    service's -o are smtpd's; dnsblog and tlsproxy are accepted (they serve postscreen)."""
    master = _master(POSTSCREEN + SUBMISSION.splitlines()[0] + "\n")
    smtp, submission = smtpd_services(master)
    assert (smtp.name, smtp.host, smtp.port) == ("smtp", None, 25)
    assert smtp.postscreen == (("postscreen_greet_wait", "3s"),)
    assert smtp.postscreen_origin == "/etc/mailgate/master.cf:1"
    assert smtp.overrides == (("smtpd_client_restrictions", "reject_unknown_client_hostname"),)
    assert smtp.origin == "/etc/mailgate/master.cf:3"
    assert submission.postscreen is None
    base = _config(tmp_path, "postscreen_greet_wait = 6s\n")
    screening = postscreen_config(base, smtp)
    assert screening is not None and screening.get_time("postscreen_greet_wait") == 3
    assert service_config(base, smtp).get_time("postscreen_greet_wait") == 6
    assert service_config(base, smtp).get_list("smtpd_client_restrictions") == (
        "reject_unknown_client_hostname",)
    assert postscreen_config(base, submission) is None
    # behind postscreen, postscreen_upstream_proxy_protocol says if a PROXY header comes
    proxied = _config(tmp_path, "smtpd_upstream_proxy_protocol = haproxy\n")
    assert service_config(proxied, smtp).get_str("smtpd_upstream_proxy_protocol") == ""
    assert service_config(proxied, submission).get_str("smtpd_upstream_proxy_protocol") == \
        "haproxy"
    proxied = _config(tmp_path, "postscreen_upstream_proxy_protocol = haproxy\n")
    assert service_config(proxied, smtp).get_str("smtpd_upstream_proxy_protocol") == "haproxy"


def test_postscreen_hands_clients_to_smtpd_service_name() -> None:
    master = _master(POSTSCREEN.replace("smtpd     pass", "other     pass"))
    with pytest.raises(ConfigError, match="service smtpd of type pass"):
        smtpd_services(master)
    renamed = POSTSCREEN.replace("-o postscreen_greet_wait=3s", "-o smtpd_service_name=other")
    (smtp,) = smtpd_services(_master(renamed.replace("smtpd     pass", "other     pass")))
    assert smtp.overrides == (("smtpd_client_restrictions", "reject_unknown_client_hostname"),)


def test_pipe_transport_is_refused_only_when_main_cf_sends_mail_to_it(tmp_path: Path) -> None:
    master = _master("maildrop unix - n n - - pipe flags=DRhu user=vmail argv=/bin/md\n")
    (tmp_path / "main.cf").write_text("")
    assert smtpd_services(master, Config.load(str(tmp_path))) == []
    (tmp_path / "main.cf").write_text("virtual_transport = maildrop\n")
    with pytest.raises(ConfigError, match=r"master\.cf:1: service maildrop: mailgate has no pipe"):
        smtpd_services(master, Config.load(str(tmp_path)))


def _config(tmp_path: Path, text: str) -> Config:
    (tmp_path / "main.cf").write_text(text)
    return Config.load(str(tmp_path))


def test_with_overrides_expands_against_main_cf_and_other_overrides(tmp_path: Path) -> None:
    base = _config(tmp_path, "myhostname = mx.example.org\n"
                             "mua_restrictions = permit_sasl_authenticated, reject\n")
    cfg = base.with_overrides([("smtpd_recipient_restrictions", "$mua_restrictions"),
                               ("smtpd_banner", "$myhostname $mail_name $extra"),
                               ("extra", "submission"), ("smtpd_timeout", "1m")],
                              "/etc/mailgate/master.cf:12")
    assert cfg.get_list("smtpd_recipient_restrictions") == ("permit_sasl_authenticated", "reject")
    assert cfg.get_str("smtpd_banner") == "mx.example.org mailgate submission"
    assert cfg.get_time("smtpd_timeout") == 60
    assert cfg.origin("smtpd_timeout") == "/etc/mailgate/master.cf:12"
    assert base.get_time("smtpd_timeout") == 300  # the base is unchanged


def test_with_overrides_myhostname_moves_mydomain(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "myhostname = a.example.org\n").with_overrides(
        [("myhostname", "mx.example.net")], "m:1")
    assert cfg.get_str("mydomain") == "example.net"


def test_with_overrides_bad_value_and_unused_name(tmp_path: Path) -> None:
    base = _config(tmp_path, "")
    with pytest.raises(ConfigError, match=r"^/x/master.cf:7: bad boolean configuration: "
                                          r"smtpd_delay_reject = maybe"):
        base.with_overrides([("smtpd_delay_reject", "maybe")], "/x/master.cf:7")
    cfg = base.with_overrides([("no_such_parameter", "1")], "/x/master.cf:8")
    assert cfg.unused_parameters() == ["/x/master.cf:8: unused parameter: no_such_parameter=1"]


def test_service_config_sets_service_name_and_syslog_name(tmp_path: Path) -> None:
    base = _config(tmp_path, "")
    (service,) = smtpd_services(_master(
        "submission inet n - y - - smtpd -o syslog_name=postfix/$service_name\n"))
    cfg = service_config(base, service)
    assert cfg.get_str("syslog_name") == "postfix/submission"
    assert base.get_str("syslog_name") == "mailgate"


def test_postconf_formatting_folds_and_braces() -> None:
    (entry,) = _master("relay unix - - y - - smtp -o {a = b c} -v -- {d e} f\n").entries
    assert format_entry(entry) == ("relay      unix  -       -       y       -       -       "
                                   "smtp -o {a=b c} -v -- {d e} f")
    assert format_entry(entry, fold=True).splitlines()[1:] == ["    -o {a=b c}", "    -v -- {d e} f"]
    master = _master("a inet n - y - - smtpd -o x=1\na inet n - y - - smtpd -o y=2\n")
    lines, warnings = show_parameters(master, ["a/inet/y", "b"])
    assert lines == ["a/inet/y = 2", "a/inet/y = 2"]  # one table per service/type, as postconf
    assert warnings == ['unmatched request: "b"']
