"""Fuzz targets for configuration text: main.cf, postmap sources (texthash/hash), cidr,
regexp and pcre tables, and `type:{...}` table specs. A file either loads (its warnings
naming file and line) or raises the documented error; anything else is a defect."""

from __future__ import annotations

import random
import re
from types import MappingProxyType

from mailgate.config.config import Config
from mailgate.config.maincf import logical_lines, parse_main_cf, split_list
from mailgate.config.params import BY_NAME, PARAMETERS
from mailgate.errors import ConfigError, MapConfigError, MapError
from mailgate.maps import cidr, default_registry, regexp
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.compiled import postmap_warnings
from mailgate.maps.pattern_source import table_lines
from mailgate.maps.simple import DictMap, parse_source
from support.fuzz_targets import check
from support.fuzzing import Target, ipv4, ipv6, lines_of, word

_BIG_BOUND = re.compile(r"\{[^}]*[0-9]{3}")
_STACKED = re.compile(r"[*+?}]{6}")
_LINE = re.compile(r"fuzz/[\w.]+, line \d+: ")

# --- main.cf ----------------------------------------------------------------------------
_DEFAULTS = {p.name: p.default for p in PARAMETERS}
_DEFAULTS.update(myhostname="mail.example.test", mydomain="example.test")
_DEFAULTS_RO = MappingProxyType(_DEFAULTS)


def run_maincf(data: bytes) -> None:
    """parse, then convert every parameter as start-up does (Config.validate); the only
    error is ConfigError naming main.cf and the line of the setting at fault."""
    text = data.decode("utf-8", "surrogateescape")
    list(logical_lines(text))
    try:
        entries, warnings = parse_main_cf(text, "fuzz/main.cf")
    except ConfigError as exc:
        check(_LINE.match(str(exc)), f"parse error without file:line: {exc}")
        return
    check(all(_LINE.match(w) for w in warnings), f"warning without file:line: {warnings}")
    explicit = MappingProxyType({e.name: e for e in entries})
    config = Config(_DEFAULTS_RO, explicit, None, tuple(warnings))
    try:
        config.validate()
    except ConfigError as exc:
        check(_LINE.match(str(exc)), f"validation error without file:line: {exc}")
        return
    for entry in entries[:8]:
        split_list(config.expanded(entry.name))
    config.unused_parameters()
    config.postconf_lines("n")


def gen_maincf(rng: random.Random) -> bytes:
    names = [p.name for p in PARAMETERS]

    def setting(r: random.Random) -> str:
        name = r.choice(names) if r.random() < 0.8 else word(r, "abc_")
        kind = BY_NAME[name].kind.name if name in BY_NAME else "STR"
        value = {"INT": lambda: str(r.choice((0, 1, -1, 10**20, r.randrange(1000)))),
                 "BOOL": lambda: r.choice(("yes", "no", "maybe", "")),
                 "TIME": lambda: r.choice(("30s", "5m", "1.5h", "7", "9w", "x")),
                 "SIZE": lambda: r.choice(("0", "10240000", "-5", "1e3"))}.get(kind, lambda: word(r))()
        if r.random() < 0.3:
            value = r.choice(("$myhostname", "${myhostname?{x}:{y}}", "${{$a} == {1} ? {y} : {n}}",
                              "$(mydomain)", "${nosuch:default}", "$$", "${", "$(x", "{a, b}",
                              "${{1} <=level {2} ? {a}}", "hash:/etc/x, inline:{a=b}")) + value
        return f"{name} = {value}" + r.choice(("", "\n  continued", "\n# c"))

    return lines_of(rng, [setting, lambda r: "# comment", lambda r: ""], 12)


MAINCF_SEEDS = (
    b"myhostname = mx.example.test\nmydestination = $myhostname, localhost.$mydomain\n"
    b"smtpd_recipient_restrictions =\n  permit_mynetworks,\n  reject_unauth_destination\n",
    b"message_size_limit = 10240000\nsmtpd_timeout = 300s\nsmtpd_banner = ${myhostname?{$myhostname "
    b"ESMTP}:{x}}\nfoo = ${{$message_size_limit} > {5} ? {big} : {small}}\n",
    b"smtputf8_enable = no\nsmtpd_delay_reject=yes\nmynetworks = 127.0.0.0/8 [::1]/128\n",
)


# --- postmap sources, cidr, regexp, pcre ------------------------------------------------
def _lines_warned(warnings: list[str]) -> None:
    for w in warnings:
        check(_LINE.search(w) or "logical line must not start" in w or
              "duplicate entry" in w, f"warning without file:line: {w}")


def run_texthash(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for fold_case, utf8 in ((True, True), (False, False)):
        entries, warnings = parse_source(text, "fuzz/table", fold_case, utf8)
        _lines_warned(warnings)
        postmap_warnings("fuzz/table.db", warnings, fold_case, utf8)
        table = DictMap("texthash:fuzz/table", entries, fold_case, utf8=utf8)
        for key, value in list(entries.items())[:16]:
            check(table.lookup(key) == value, f"key {key!r} does not find its value")


def gen_source(rng: random.Random) -> bytes:
    return lines_of(rng, [lambda r: f"{word(r)}@{word(r)} {r.choice(('OK', 'REJECT no', 'x y'))}",
                          lambda r: f'"{word(r, "a b")}" v', lambda r: f"{word(r)}: alias",
                          lambda r: f" continued {word(r)}", lambda r: "# c", lambda r: "\\x y"])


def _lookup_keys(data: bytes) -> list[str]:
    return ["192.0.2.1", "::1", "2001:db8::1", "::ffff:1.2.3.4", "1.2.3.4\0x",
            data[:40].decode("utf-8", "surrogateescape"), "user@example.test"]


def run_cidr(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    lines, read_warnings = table_lines(text, "fuzz/cidr")
    rules, warnings = cidr.parse_rules(lines, "cidr map fuzz/cidr")
    _lines_warned(warnings + read_warnings)
    check(all(r.skip <= len(rules) for r in rules), "if points past the end")
    table = cidr.CidrMap("cidr:fuzz/cidr", rules, warnings)
    for key in _lookup_keys(data):
        table.lookup(key)


def gen_cidr(rng: random.Random) -> bytes:
    def net(r: random.Random) -> str:
        addr = r.choice((ipv4(r), ipv6(r), f"[{ipv6(r)}]", word(r)))
        return addr + r.choice(("", f"/{r.randrange(140)}", "/x", "/"))

    return lines_of(rng, [lambda r: f"{r.choice(('', '!', '! !'))}{net(r)} OK",
                          lambda r: f"if {net(r)}", lambda r: "endif", lambda r: net(r),
                          lambda r: "ENDIF x"])


def _run_regexp(data: bytes, pcre: bool) -> None:
    text = data.decode("utf-8", "surrogateescape")
    if not pcre and (text.count("{") > 3 or _BIG_BOUND.search(text) or _STACKED.search(text)):
        # glibc regcomp() is exponential in stacked or large bounds and stacked repetitions
        # (`x{2,3}{2,3}...`, `(a{1,300}){1,300}`, `(.*****...)`: gigabytes, minutes in C that
        # no signal interrupts); Postfix calls the same regcomp, so such a table is the
        # administrator's to avoid
        return
    name = "pcre" if pcre else "regexp"
    lines, read_warnings = table_lines(text, f"fuzz/{name}")
    rules, warnings = regexp.parse_rules(lines, f"{name} map fuzz/{name}", pcre)
    for i, w in enumerate(warnings):
        # mac_parse()'s own warning has no file:line in Postfix either; the rule's follows
        check(_LINE.search(w) or (i + 1 < len(warnings) and _LINE.search(warnings[i + 1])
                                  and "bad replacement syntax" in warnings[i + 1]),
              f"warning without file:line: {w}")
    check(all(w.startswith(f"fuzz/{name}: ") for w in read_warnings), "read warnings")
    table = regexp.RegexpMap(f"{name}:fuzz", rules, warnings)
    for key in _lookup_keys(data):
        table.lookup(key)


def run_regexp(data: bytes) -> None:
    _run_regexp(data, False)


def run_pcre(data: bytes) -> None:
    _run_regexp(data, True)


def gen_regexp(rng: random.Random) -> bytes:
    def pattern(r: random.Random) -> str:
        body = r.choice(("^(.*)@(.*)$", "a+b", "[[:alpha:]]", "x{2,3}", "(a|b", "\\", "(?i)x",
                         "^$", ".*", "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)", word(r)))
        d = r.choice("/|#,")
        return f"{r.choice(('', '!'))}{d}{body}{d}{r.choice(('', 'i', 'x', 'mx', 'Z', 'X'))}"

    results = ("OK", "REJECT $1", "${2}x", "$(1)", "$$", "$9", "$", "${1", "")
    return lines_of(rng, [lambda r: f"{pattern(r)} {r.choice(results)}",
                          lambda r: f"{pattern(r)}!{pattern(r)} x", lambda r: f"if {pattern(r)}",
                          lambda r: "endif", lambda r: " cont", lambda r: "garbage"])


# --- table specs (type:{...}) -----------------------------------------------------------
def _no_files(name: str, options: MapOptions) -> object:
    raise MapConfigError("files are not opened while fuzzing")


def _memory_registry() -> Registry:
    """Every table type, but none that reads a file (a fuzzed name could be /dev/zero)."""
    reg = default_registry()
    for kind in ("texthash", "hash", "btree", "lmdb", "unix"):
        reg.register(kind, _no_files)  # type: ignore[arg-type]
    for kind in ("cidr", "regexp", "pcre"):
        real = reg.openers[kind]
        reg.register(kind, lambda n, o, real=real: real(n, o) if n.strip().startswith("{")
                     else _no_files(n, o))  # type: ignore[misc]
    return reg


REGISTRY = _memory_registry()


def run_map_spec(data: bytes) -> None:
    spec = data.decode("utf-8", "surrogateescape")
    try:
        table = REGISTRY.open(spec)
    except MapConfigError:
        return
    for key in _lookup_keys(data):
        try:
            table.lookup(key)
        except MapError:
            pass


def gen_spec(rng: random.Random) -> bytes:
    inner = rng.choice(("inline:{a=b, {c = d e}}", "static:{x y}", "cidr:{{192.0.2.0/24 OK}}",
                        "regexp:{{/^a/ x}, {/b/ y}}", "pcre:{{/(a)/ $1}}", "fail:x", "environ:x"))
    return rng.choice((inner, f"unionmap:{{{inner}, {inner}}}", f"pipemap:{{{inner},{inner}}}",
                       f"unionmap:{{pipemap:{{{inner}}}}}")).encode()


TABLE_TARGETS: tuple[Target, ...] = (
    Target("maincf", run_maincf, MAINCF_SEEDS, gen_maincf, 4096),
    Target("texthash", run_texthash, (gen_source(random.Random(1)),), gen_source, 4096),
    Target("cidr", run_cidr, (gen_cidr(random.Random(1)),), gen_cidr, 2048),
    Target("regexp", run_regexp, (gen_regexp(random.Random(1)),), gen_regexp, 1024),
    Target("pcre", run_pcre, (gen_regexp(random.Random(2)),), gen_regexp, 1024),
    Target("map_spec", run_map_spec, (gen_spec(random.Random(1)),), gen_spec, 512),
)
