"""master.cf as text: Postfix 3.7's reader (logical lines, fields, quoting, -o options)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from mailgate.config.maincf import logical_lines
from mailgate.errors import ConfigError

BLANKS = " \t\r\n"  # Postfix's PCF_MASTER_BLANKS
TYPES = ("unix", "unix-dgram", "fifo", "inet", "pass")  # master(5) service types
FIELDS = ("service", "type", "private", "unpriv", "chroot", "wakeup", "process_limit", "command")
MIN_FIELDS = len(FIELDS)
LINE_LIMIT = 80  # PCF_LINE_LIMIT: postconf -f folds before this column
INDENT = "    "  # PCF_INDENT_TEXT
COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)  # postconf -M column goals per field
VALUE_OPTIONS = "o"  # daemon options that take a value (pcf_daemon_options_expecting_value)

# Services that mailgate does inside its own processes: a line for one is accepted and ignored
# (dnsblog and tlsproxy serve postscreen, which runs in the worker: decision 0065).


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One master.cf entry: the 8 fields as written (`-` = default) and the command's args.

    `args` are normalized as postconf does (`-oname=value` → `-o`, `name=value`; braces
    removed); `overrides` are its `-o name=value` settings in order; `origin` is "FILE:LINE".
    """

    name: str
    type: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: tuple[str, ...]
    overrides: tuple[tuple[str, str], ...]
    origin: str

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.name, self.type, self.private, self.unpriv, self.chroot, self.wakeup,
                self.maxproc, self.command)

    @property
    def namespace(self) -> str:
        """`service/type`, postconf's name for the entry's parameter name space."""
        return f"{self.name}/{self.type}"


@dataclass(frozen=True, slots=True)
class MasterCf:
    """The entries of one master.cf, in file order, and the warnings reading it gave."""

    path: str
    entries: tuple[ServiceEntry, ...]
    warnings: tuple[str, ...] = ()


# --- reading ------------------------------------------------------------------------------
def load_master_cf(config_dir: str) -> MasterCf | None:
    """Read `config_dir/master.cf`; None when there is none. Raises ConfigError (FILE:LINE)."""
    path = os.path.join(config_dir, "master.cf")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror}") from exc
    return parse_master_cf(text, path)


def parse_master_cf(text: str, path: str) -> MasterCf:
    """Parse master.cf text (master(5), postconf's checks); raise ConfigError on a bad entry."""
    entries: list[ServiceEntry] = []
    warnings: list[str] = []
    for number, line in logical_lines(text):
        origin = f"{path}:{number}"
        if line[0].isspace():  # Postfix's readllines() warns and skips such a line
            warnings.append(f'{origin}: logical line must not start with whitespace: "{line}"')
            continue
        argv = split_quoted(line)
        if len(argv) < MIN_FIELDS:
            raise ConfigError(f"{origin}: bad field count")
        _check_fields(argv, line, origin)
        args = _normalize_args(argv[MIN_FIELDS:], origin, warnings)
        name, kind, private, unpriv, chroot, wakeup, maxproc, command = argv[:MIN_FIELDS]
        entries.append(ServiceEntry(name, kind, private, unpriv, chroot, wakeup, maxproc,
                                    command, tuple(args), tuple(_overrides(args)), origin))
    return MasterCf(path, tuple(entries), tuple(warnings))


def split_quoted(text: str) -> list[str]:
    """Postfix's argv_splitq(): split on blanks, except inside balanced `{}`."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in BLANKS:
            i += 1
        if i >= n:
            break
        start, level = i, 0
        while i < n:
            c = text[i]
            if c == "{":
                level += 1
            elif level > 0 and c == "}":
                level -= 1
            elif level == 0 and c in BLANKS:
                break
            i += 1
        tokens.append(text[start:i])
    return tokens


def _check_fields(argv: list[str], line: str, origin: str) -> None:
    """pcf_check_master_entry(): type, the three booleans, wakeup and process limit."""
    def bad(field: int) -> ConfigError:
        return ConfigError(f'{origin}: invalid {FIELDS[field]} field "{argv[field]}" in "{line}"')

    if argv[1] not in TYPES:
        raise bad(1)
    for field in (2, 3, 4):
        if argv[field] not in ("y", "n", "-"):
            raise bad(field)
    wakeup = argv[5].removesuffix("?")
    if argv[5] != "-" and wakeup.strip("0123456789"):
        raise bad(5)
    if argv[6] != "-" and argv[6].strip("0123456789"):
        raise bad(6)


def extract_braced(text: str) -> tuple[str, str | None]:
    """Postfix's extpar(): the text inside `{...}`, blanks trimmed, and a warning or None."""
    level, end = 0, -1
    for i, c in enumerate(text):
        if c == "{":
            level += 1
        elif c == "}":
            level -= 1
            if level == 0:
                end = i
                break
    if end < 0:
        return text[1:].strip(BLANKS), f"missing '}}' in \"{text}\""
    err = f"syntax error after '}}' in \"{text}\"" if end + 1 < len(text) else None
    return text[1:end].strip(BLANKS), err


def split_nameval(text: str) -> tuple[str, str]:
    """Postfix's split_nameval(): `name = value` → (name, value); raises ValueError (why)."""
    text = text.lstrip(BLANKS)
    end = 0
    while end < len(text) and text[end] not in BLANKS and text[end] != "=":
        end += 1
    if end == 0:
        raise ValueError("missing attribute name")
    rest = text[end:].lstrip(BLANKS)
    if not rest.startswith("="):
        raise ValueError("missing '=' after attribute name")
    return text[:end], rest[1:].strip(BLANKS)


def _normalize_args(args: list[str], origin: str, warnings: list[str]) -> list[str]:
    """pcf_normalize_daemon_args(): split `-vo` and `-oname=value`, remove `{}` around values."""
    path = origin.rpartition(":")[0]
    out = list(args)
    field = 0

    def extract(at: int, nameval: bool) -> None:
        value, err = extract_braced(out[at])
        if err:
            warnings.append(f"{path}: {err}")
        if nameval:
            try:
                name, val = split_nameval(value)
                value = f"{name}={val}"
            except ValueError as exc:
                warnings.append(f'{path}: {exc}: "{value}"')
        out[at] = value

    while field < len(out):
        arg = out[field]
        if not arg.startswith("-") or arg == "--":
            break
        cut = next((i for i in range(2, len(arg)) if arg[i] in VALUE_OPTIONS), None)
        if cut is not None:  # "-vozz" → "-v", "-ozz"
            out[field:field + 1] = [arg[:cut], "-" + arg[cut:]]
            arg = arg[:cut]
        if arg[1:2] not in VALUE_OPTIONS:
            field += 1
            continue
        if len(arg) > 2:  # "-oname=value" → "-o", "name=value"
            out[field:field + 1] = [arg[:2], arg[2:]]
        if field + 1 < len(out):
            field += 1
            if out[field].startswith("{"):
                extract(field, out[field - 1][1:2] == "o")
        field += 1
    for at in range(field, len(out)):
        if out[at].startswith("{"):
            extract(at, False)
    return out


def daemon_options(args: Iterable[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The leading daemon options as (option, value or None) and the arguments after them."""
    items = list(args)
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(items) and items[i].startswith("-") and items[i] != "--":
        value = items[i + 1] if items[i][1:2] in VALUE_OPTIONS and i + 1 < len(items) else None
        options.append((items[i], value))
        i += 1 if value is None else 2
    return options, items[i:]


def _overrides(args: list[str]) -> list[tuple[str, str]]:
    out = []
    for option, value in daemon_options(args)[0]:
        if option == "-o" and value is not None:
            try:
                out.append(split_nameval(value))
            except ValueError:
                continue
    return out


# --- the services mailgate runs -----------------------------------------------------------
