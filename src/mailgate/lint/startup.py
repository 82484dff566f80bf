"""What start-up says about a configuration, located: its refusals (config-error) and its
warnings (unused parameters, overriding entries, master.cf's warnings)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator

from mailgate.app.wiring import restriction_lists
from mailgate.config.config import Config
from mailgate.config.mastercf import MasterCf, smtpd_services, unused_overrides
from mailgate.config.params import BY_NAME
from mailgate.config.settings import DeliverySettings, SmtpdSettings
from mailgate.engine.settings import EngineSettings
from mailgate.errors import ConfigError
from mailgate.lint.findings import Finding, Where, split_located
from mailgate.lint.lists import Subject
from mailgate.policy.client import clients as policy_clients

# Postfix parameters about Postfix's own installation and programs (paths, the debugger,
# biff): a stock main.cf sets them, and they do nothing in mailgate. Start-up calls them
# unused; lint leaves them out, as neither spam nor mail depends on them (decision 0060).
POSTFIX_INSTALLATION = frozenset({
    "command_directory", "daemon_directory", "debugger_command", "sendmail_path",
    "newaliases_path", "mailq_path", "setgid_group", "html_directory", "manpage_directory",
    "sample_directory", "readme_directory", "meta_directory", "shlib_directory", "biff"})
_REFUSES_RELAY = "specify at least one working instance"  # EngineSettings: open-relay's case


def config_error(exc: ConfigError, main_cf: str) -> Finding:
    where, text = split_located(str(exc), main_cf)
    return Finding(where, "config-error", f"{text}: mailgate serve refuses to start",
                   "correct the value")


def refusals(subject: Subject, master: MasterCf | None,
             open_relay: bool = False) -> Iterator[Finding]:
    """What stops `mailgate serve` for this configuration, as far as the text decides
    (certificates and users depend on the machine): settings, restriction classes, policy
    services, master.cf lines. The refusal of an open relay is left to the open-relay
    finding when there is one (`open_relay`)."""
    cfg = subject.cfg
    checks: list[Callable[[], object]] = [
        lambda: SmtpdSettings.from_config(cfg), lambda: DeliverySettings.from_config(cfg),
        lambda: EngineSettings.from_config(cfg),
        lambda: policy_clients(cfg, restriction_lists(cfg))]
    if master is not None and subject.service is None:
        checks.append(lambda: smtpd_services(master, cfg))
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            if not (open_relay and _REFUSES_RELAY in str(exc)):
                yield config_error(exc, subject.main_cf)


def warnings(cfg: Config, master: MasterCf | None, main_cf: str) -> Iterator[Finding]:
    """The warnings `mailgate serve` logs at start-up, each at its file and line."""
    for text in cfg.warnings:
        where, rest = split_located(text, main_cf)
        name = rest.partition(": ")[2].partition("=")[0]
        yield Finding(where, "overriding-entry", rest, f"keep one {name} setting: the last "
                      "one wins and the earlier ones are ignored")
    unused = [*cfg.unused_parameters(), *(unused_overrides(master, cfg) if master else ())]
    for text in unused:
        where, rest = split_located(text, main_cf)
        name = rest.partition(": ")[2].partition("=")[0]
        if name not in POSTFIX_INSTALLATION:
            yield Finding(where, "unused-parameter", f"{rest}: nothing reads it", _unused(name))
    if master is None:
        return
    for text in master.warnings:
        where, rest = split_located(text, main_cf)
        yield Finding(where, "startup-warning", rest, "")
    try:
        services = smtpd_services(master, cfg)
    except ConfigError:
        return  # a refusal: config-error
    if not services:
        yield Finding(Where(master.path), "startup-warning", "no smtpd service of type inet: the server "
                      "listens on smtpd_listen", "add an smtpd line, e.g. "
                      "`smtp inet n - y - - smtpd`")


def _unused(name: str) -> str:
    close = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.85)
    # smtp_*/lmtp_* are Postfix's client parameters beside the server's smtpd_*: no typo
    if close and not name.startswith(("smtp_", "lmtp_")):
        return f"did you mean {close[0]}?"
    return "remove it, or check that mailgate implements what it is meant to do"
