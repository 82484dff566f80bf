"""`mailgate lint`: read main.cf, master.cf and every table they name; report the mistakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from mailgate.app.wiring import DEMO_MAIN_CF
from mailgate.config.config import Config
from mailgate.config.mastercf import MasterCf, load_master_cf, service_config, smtpd_services
from mailgate.errors import ConfigError
from mailgate.lint.dnsbl import check_resolver
from mailgate.lint.findings import Finding, unique, write
from mailgate.lint.lists import RestrictionList, Subject, restriction_lists_of
from mailgate.lint.parameters import check_comments, check_tarpit
from mailgate.lint.relay import open_relay
from mailgate.lint.restrictions import ListContext, check_lists
from mailgate.lint.startup import config_error, refusals, warnings
from mailgate.lint.tables import Tables, check_tables, table_refs
from mailgate.maps import MapOptions, default_registry

RESOLV_CONF = "/etc/resolv.conf"


def run(config_dir: str | None, as_json: bool, out: TextIO,
        resolv_conf: str = RESOLV_CONF) -> int:
    """Lint `config_dir` (without one: the embedded configuration `mailgate serve` runs).
    Exit status 1 when a finding is an error, else 0."""
    main_cf = str(Path(config_dir) / "main.cf") if config_dir else "(embedded main.cf)"
    name = config_dir or "(embedded configuration)"
    try:
        cfg = Config.load(config_dir, base_text=None if config_dir else DEMO_MAIN_CF)
    except ConfigError as exc:  # nothing else can be read without it
        return write([config_error(exc, main_cf)], out, as_json, name)
    found: list[Finding] = []
    master = None
    try:
        master = load_master_cf(config_dir) if config_dir else None
    except ConfigError as exc:
        found.append(config_error(exc, main_cf))
    found += lint(cfg, master, main_cf, resolv_conf)
    return write(unique(found), out, as_json, name)


def subjects(cfg: Config, master: MasterCf | None, main_cf: str
             ) -> tuple[list[Subject], list[Finding]]:
    """The configurations the server runs: one per master.cf smtpd service (main.cf with its
    `-o` settings), or main.cf alone; and the services that do not load."""
    try:
        services = smtpd_services(master, cfg) if master is not None else []
    except ConfigError:
        services = []  # refusals() reports it
    out, errors = [], []
    for service in services:
        try:
            out.append(Subject(service_config(cfg, service), main_cf, service.name))
        except ConfigError as exc:
            errors.append(config_error(exc, main_cf))
    return (out or [Subject(cfg, main_cf)]), errors


def lint(cfg: Config, master: MasterCf | None, main_cf: str,
         resolv_conf: str = RESOLV_CONF) -> Iterator[Finding]:
    """Every finding, in no particular order and possibly repeated (per service)."""
    todo, errors = subjects(cfg, master, main_cf)
    yield from errors
    yield from warnings(cfg, master, main_cf)
    yield from check_comments(cfg, main_cf)
    tables = Tables(default_registry(MapOptions.from_config(cfg)))
    every_list: list[RestrictionList] = []
    for subject in todo:
        scfg = subject.cfg
        lists = restriction_lists_of(subject)
        every_list += lists
        relay = open_relay(subject, tables)
        yield from refusals(subject, master, open_relay=relay is not None)
        yield from check_lists(lists, ListContext(
            frozenset(n.lower() for n in scfg.get_list("smtpd_restriction_classes")),
            scfg.get_bool("smtpd_delay_reject"), scfg.get_bool("smtpd_helo_required"),
            bool(scfg.get_list("permit_mx_backup_networks"))))
        if relay is not None:
            yield relay
        yield from check_tarpit(subject)
        yield from check_resolver(subject, lists, resolv_conf)
    yield from check_tables(table_refs(todo, every_list), tables)
