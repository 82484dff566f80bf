"""The parsed configuration: defaults + main.cf + `-o`, typed getters, and checks at start-up."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mailgate.config.maincf import Entry, expand, lookup_in, parse_main_cf, split_list
from mailgate.config.params import BY_NAME, PARAMETERS, Kind
from mailgate.errors import ConfigError

_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BOOL = {"yes": True, "true": True, "no": False, "false": False}


def system_hostname() -> str:
    """The machine's fully qualified name, as Postfix derives `myhostname`."""
    name = socket.gethostname()
    if "." not in name:
        try:
            fqdn = socket.getfqdn(name)
        except OSError:
            fqdn = name
        if "." in fqdn and not fqdn.startswith("localhost"):
            name = fqdn
    return name.lower()


def _follow_myhostname(defaults: dict[str, str], explicit: Mapping[str, Entry]) -> None:
    """mydomain's default follows an explicit myhostname, as in Postfix."""
    if "myhostname" in explicit:
        host = expand(explicit["myhostname"].value, lookup_in(
            {k: v.value for k, v in explicit.items()}, defaults)).lower()
        defaults["mydomain"] = host.split(".", 1)[1] if "." in host else "localdomain"


@dataclass(frozen=True)
class Config:
    """Immutable parameter values: built-in defaults, then main.cf, then `-o` overrides.

    Raw (unexpanded) values are kept for `postconf -n`; getters expand and convert.
    """

    defaults: Mapping[str, str]
    explicit: Mapping[str, Entry]
    config_dir: str | None = None
    warnings: tuple[str, ...] = ()
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def load(
        cls,
        config_dir: str | None = None,
        overrides: Iterable[str] = (),
        base_text: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Read `config_dir/main.cf` (or `base_text`, the embedded demo) and apply overrides."""
        env = os.environ if environ is None else environ
        defaults = {p.name: p.default for p in PARAMETERS}
        defaults["myhostname"] = system_hostname()
        host = defaults["myhostname"]
        defaults["mydomain"] = host.split(".", 1)[1] if "." in host else "localdomain"
        if env.get("MAILGATE_HOME"):
            defaults["mailgate_home"] = env["MAILGATE_HOME"]
        warnings: list[str] = []
        entries: list[Entry] = []
        if config_dir is not None:
            path = Path(config_dir) / "main.cf"
            try:
                text = path.read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise ConfigError(f"open {path}: {exc.strerror}") from exc
            entries, warnings = parse_main_cf(text, str(path))
        elif base_text is not None:
            entries, warnings = parse_main_cf(base_text, "(embedded main.cf)")
        for item in overrides:
            name, eq, value = item.partition("=")
            if not eq or not name.strip():
                raise ConfigError(f'-o {item}: expected name=value')
            entries.append(Entry(name.strip(), value.strip(), "command line"))
        explicit = {e.name: e for e in entries}
        _follow_myhostname(defaults, explicit)
        config = cls(MappingProxyType(defaults), MappingProxyType(explicit), config_dir,
                     tuple(warnings))
        config.validate()
        return config

    def with_overrides(self, overrides: Iterable[tuple[str, str]], origin: str) -> Config:
        """This configuration with master.cf `-o name=value` settings on top, as a Postfix
        daemon applies its `-o` options (mail_conf_update) over main.cf.

        `$name` in a value expands against main.cf and the other overrides; a name that no
        parameter uses is reported by unused_parameters() at `origin`, as one in main.cf is.
        Raises ConfigError naming `origin` for a bad value.
        """
        explicit = dict(self.explicit)
        for name, value in overrides:
            explicit[name] = Entry(name, value, origin)
        defaults = dict(self.defaults)
        _follow_myhostname(defaults, explicit)
        config = Config(MappingProxyType(defaults), MappingProxyType(explicit),
                        self.config_dir, self.warnings)
        config.validate()
        return config

    # --- raw access -------------------------------------------------------------------
    def raw(self, name: str) -> str | None:
        """The unexpanded value of `name`, or None if it is neither set nor known."""
        entry = self.explicit.get(name)
        if entry is not None:
            return entry.value
        return self.defaults.get(name)

    def is_set(self, name: str) -> bool:
        return name in self.explicit

    def origin(self, name: str) -> str:
        entry = self.explicit.get(name)
        return entry.origin if entry else "default"

    def expanded(self, name: str) -> str:
        """The value of `name` with `$name` references expanded (empty if undefined)."""
        key = "x:" + name
        hit = self._cache.get(key)
        if hit is None:
            raw = self.raw(name)
            hit = "" if raw is None else self._expand(raw, name)
            self._cache[key] = hit
        assert isinstance(hit, str)
        return hit

    def _expand(self, raw: str, name: str) -> str:
        try:
            return expand(raw, self.raw)
        except ConfigError as exc:
            raise ConfigError(f"{self.origin(name)}: parameter {name}: {exc}") from exc

    def expand_text(self, text: str) -> str:
        """Expand `$name` references in a free text (e.g. a restriction class body)."""
        return expand(text, self.raw)

    # --- typed getters ----------------------------------------------------------------
    def get_str(self, name: str) -> str:
        return self.expanded(name).strip()

    def get_list(self, name: str) -> tuple[str, ...]:
        return tuple(split_list(self.expanded(name)))

    def get_bool(self, name: str) -> bool:
        value = self.get_str(name).lower()
        if value not in _BOOL:
            self._bad(name, "bad boolean configuration")
        return _BOOL[value]

    def get_int(self, name: str) -> int:
        value = self.get_str(name)
        if not re.fullmatch(r"-?[0-9]+", value):
            self._bad(name, "bad numerical configuration")
        return self._bounded(name, int(value))

    def get_time(self, name: str) -> float:
        """A time in seconds; a bare number takes the parameter's default unit."""
        value = self.get_str(name).lower()
        param = BY_NAME.get(name)
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)", value)
        if m is None:
            raise self._error(name, "bad time configuration")
        unit = m.group(2) or (param.unit if param else "s")
        seconds = float(m.group(1)) * _TIME_UNITS[unit]
        if seconds == float("inf"):  # more digits than a float holds: out of any bound
            raise self._error(name, "bad time configuration")
        self._bounded(name, int(seconds))
        return seconds

    def get_size(self, name: str) -> int:
        value = self.get_str(name)
        if not re.fullmatch(r"[0-9]+", value):
            self._bad(name, "bad numerical configuration")
        return self._bounded(name, int(value))

    def _bounded(self, name: str, number: int) -> int:
        param = BY_NAME.get(name)
        if param is not None:
            if param.min is not None and number < param.min:
                raise ConfigError(f"{self.origin(name)}: invalid {name} parameter value "
                                  f"{number} < {param.min}")
            if param.max is not None and number > param.max:
                raise ConfigError(f"{self.origin(name)}: invalid {name} parameter value "
                                  f"{number} > {param.max}")
        return number

    def _bad(self, name: str, what: str) -> None:
        raise self._error(name, what)

    def _error(self, name: str, what: str) -> ConfigError:
        return ConfigError(f"{self.origin(name)}: {what}: {name} = {self.raw(name)}")

    # --- start-up checks --------------------------------------------------------------
    def validate(self) -> None:
        """Convert every known parameter once, so a bad value stops start-up with its origin."""
        getters = {Kind.INT: self.get_int, Kind.BOOL: self.get_bool, Kind.TIME: self.get_time,
                   Kind.SIZE: self.get_size, Kind.STR: self.get_str, Kind.LIST: self.get_list}
        for name in self.explicit:  # first, so that a bad `$` expression is reported at its
            self.expanded(name)  # own file:line, not at a default value that refers to it
        for param in PARAMETERS:
            getters[param.kind](param.name)

    def unused_parameters(self) -> list[str]:
        """Warnings for explicitly set names that no parameter table entry or reference uses.

        Like postconf: a user-defined name is "used" when another value references it as
        `$name` or it is listed in `smtpd_restriction_classes`.
        """
        referenced: set[str] = set(self.get_list("smtpd_restriction_classes"))
        pattern = re.compile(r"\$\{?\(?([A-Za-z0-9_]+)")
        for name in list(self.explicit) + list(self.defaults):
            raw = self.raw(name) or ""
            referenced.update(pattern.findall(raw))
        out = []
        for name, entry in self.explicit.items():
            if name not in BY_NAME and name not in referenced:
                out.append(f"{entry.origin}: unused parameter: {name}={entry.value}")
        return out

    # --- postconf ---------------------------------------------------------------------
    def postconf_lines(self, mode: str, names: Iterable[str] = ()) -> list[str]:
        """Lines as `postconf` (mode ""), `postconf -n` ("n") or `postconf -d` ("d") prints.

        Raises ConfigError for an unknown name, as postconf reports it.
        """
        wanted = list(names)
        if mode == "n":
            pool = sorted(self.explicit)
        else:
            pool = sorted(set(self.defaults) | {n for n in self.explicit if n in BY_NAME})
        if wanted:
            for name in wanted:
                if name not in self.defaults and name not in self.explicit:
                    raise ConfigError(f"unknown parameter: {name}")
            pool = wanted
        lines = []
        for name in pool:
            if mode == "d":
                value = self.defaults.get(name, "")
            elif mode == "n" and name not in self.explicit:
                continue
            else:
                value = self.raw(name) or ""
            value = " ".join(value.split())
            lines.append(f"{name} = {value}" if value else f"{name} =")
        return lines
