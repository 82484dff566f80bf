"""Postfix's midna_domain_to_ascii(): UTS 46 ToASCII through ICU, its warnings and its cache.

Postfix converts a non-ASCII domain with ICU's `uidna_nameToASCII_UTF8()` (UTS 46,
nontransitional unless enable_idna2003_compatibility = yes: `straße` → `xn--strae-oqa`),
then requires the result to pass valid_hostname(); each failure is a warning
`midna_domain_to_ascii_create: Problem translating domain "NAME" to ASCII form: WHY`,
logged when the name is converted, i.e. once per process while the name stays in the
process's 256-entry LRU cache (midna_domain.c). ICU (libicuuc, the one Postfix links) is
called through ctypes so that mappings, error bits and A-labels are ICU's; where it is
missing, Python's IDNA 2003 codec stands in (decision 0033: `ß` → `ss`, coarser errors).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from mailgate.smtp.hostnames import valid_hostname

MIDNA_CACHE_SIZE = 256  # midna_domain.c DEF_MIDNA_CACHE_SIZE (not a main.cf parameter)
_CAPACITY = 1023  # char buf[1024], sizeof(buf) - 1
_NAME_BYTES = 100  # "%.100s"

# uidna_openUTS46() options (uidna.h)
UIDNA_DEFAULT = 0
UIDNA_NONTRANSITIONAL_TO_ASCII = 0x10

# UIDNAInfo.errors bits, in the order of midna_domain_strerror()'s name table
UIDNA_ERRORS: tuple[tuple[str, int], ...] = (
    ("UIDNA_ERROR_EMPTY_LABEL", 0x1),
    ("UIDNA_ERROR_LABEL_TOO_LONG", 0x2),
    ("UIDNA_ERROR_DOMAIN_NAME_TOO_LONG", 0x4),
    ("UIDNA_ERROR_LEADING_HYPHEN", 0x8),
    ("UIDNA_ERROR_TRAILING_HYPHEN", 0x10),
    ("UIDNA_ERROR_HYPHEN_3_4", 0x20),
    ("UIDNA_ERROR_LEADING_COMBINING_MARK", 0x40),
    ("UIDNA_ERROR_DISALLOWED", 0x80),
    ("UIDNA_ERROR_PUNYCODE", 0x100),
    ("UIDNA_ERROR_LABEL_HAS_DOT", 0x200),
    ("UIDNA_ERROR_INVALID_ACE_LABEL", 0x400),
    ("UIDNA_ERROR_BIDI", 0x800),
    ("UIDNA_ERROR_CONTEXTJ", 0x1000),
)

Conversion = tuple[str | None, str | None]  # (A-label form or None, warning or None)


def uidna_strerror(errors: int) -> str:
    """str_long_name_mask_opt(NAME_MASK_NUMBER | NAME_MASK_COMMA): the names of the set bits,
    comma-separated, and the bits without a name as one `0x..` number."""
    names = []
    for name, bit in UIDNA_ERRORS:
        if errors & bit:
            names.append(name)
            errors &= ~bit
    if errors:
        names.append(f"0x{errors:x}")
    return ",".join(names)


def problem(name: str, why: str) -> str:
    """The warning text; the name is cut to its first 100 bytes as `%.100s` does."""
    cut = name.encode("utf-8", "surrogateescape")[:_NAME_BYTES].decode("utf-8", "surrogateescape")
    return f'midna_domain_to_ascii_create: Problem translating domain "{cut}" to ASCII form: {why}'


def valid_utf8(name: str) -> bool:
    """valid_utf8_string(): the name's bytes (surrogate-escaped when not UTF-8) are UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _UIDNAInfo(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int16), ("isTransitionalDifferent", ctypes.c_uint8),
                ("reservedB3", ctypes.c_uint8), ("errors", ctypes.c_uint32),
                ("reservedI2", ctypes.c_int32), ("reservedI3", ctypes.c_int32)]


class _Icu:
    """libicuuc's UTS 46 functions; one UIDNA object per option set, kept (ICU's UIDNA is
    immutable and may be shared)."""

    def __init__(self, lib: ctypes.CDLL, suffix: str) -> None:
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        self.open = getattr(lib, "uidna_openUTS46" + suffix)
        self.open.argtypes = [ctypes.c_uint32, ctypes.POINTER(ctypes.c_int)]
        self.open.restype = vp
        self.to_ascii = getattr(lib, "uidna_nameToASCII_UTF8" + suffix)
        self.to_ascii.argtypes = [vp, ctypes.c_char_p, i32, ctypes.c_char_p, i32,
                                  ctypes.POINTER(_UIDNAInfo), ctypes.POINTER(ctypes.c_int)]
        self.to_ascii.restype = i32
        self.error_name = getattr(lib, "u_errorName" + suffix)
        self.error_name.argtypes = [ctypes.c_int]
        self.error_name.restype = ctypes.c_char_p
        self._idna: dict[int, int] = {}

    def handle(self, options: int) -> int:
        idna = self._idna.get(options)
        if idna is None:
            error = ctypes.c_int(0)
            idna = self.open(options, ctypes.byref(error))
            if error.value > 0 or not idna:
                raise OSError(f"uidna_openUTS46: {self.error_name(error.value).decode()}")
            self._idna[options] = idna
        return idna

    def convert(self, name: str, transitional: bool) -> Conversion:
        """uidna_nameToASCII_UTF8() into Postfix's buffer, and Postfix's checks of the result."""
        idna = self.handle(UIDNA_DEFAULT if transitional else UIDNA_NONTRANSITIONAL_TO_ASCII)
        data = name.encode("utf-8").split(b"\0", 1)[0]  # strlen(name)
        buf = ctypes.create_string_buffer(_CAPACITY + 1)
        info = _UIDNAInfo(size=ctypes.sizeof(_UIDNAInfo))
        error = ctypes.c_int(0)
        length = self.to_ascii(idna, data, len(data), buf, _CAPACITY, ctypes.byref(info),
                               ctypes.byref(error))
        if error.value <= 0 and info.errors == 0 and length > 0:  # U_SUCCESS()
            ascii_name = buf.raw[:length].decode("ascii", "surrogateescape")
            if not valid_hostname(ascii_name):
                return None, problem(name, "malformed ASCII label(s)")
            return ascii_name, None
        why = uidna_strerror(info.errors) if info.errors else \
            self.error_name(error.value).decode("ascii", "replace")
        return None, problem(name, why)


def _icu_suffix(lib: ctypes.CDLL, path: str) -> str:
    """ICU's symbols carry the major version (`u_errorName_72`) unless built without
    renaming; the major is the soname's number."""
    candidates = [""]
    found = re.search(r"\.so\.(\d+)", os.path.basename(path))
    if found:
        candidates.append("_" + found.group(1))
    for suffix in candidates:
        if hasattr(lib, "uidna_openUTS46" + suffix):
            return suffix
    raise OSError(f"{path}: no uidna_openUTS46 symbol")


@functools.cache
def _icu() -> _Icu | None:
    """libicuuc through ctypes, or None when it cannot be loaded."""
    names = [ctypes.util.find_library("icuuc") or ""]
    for pattern in ("/usr/lib/*/libicuuc.so.*", "/usr/lib64/libicuuc.so.*",
                    "/usr/lib/libicuuc.so.*", "/usr/local/lib/libicuuc.so.*"):
        names.extend(sorted(glob.glob(pattern), reverse=True))
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            icu = _Icu(lib, _icu_suffix(lib, name))
            icu.handle(UIDNA_NONTRANSITIONAL_TO_ASCII)
            return icu
        except (OSError, AttributeError):
            continue
    return None


def _python_convert(name: str, transitional: bool) -> Conversion:
    """Stand-in without ICU: Python's IDNA 2003 codec (transitional, `ß` → `ss`; any codec
    error reported as UIDNA_ERROR_DISALLOWED)."""
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None, problem(name, "UIDNA_ERROR_DISALLOWED")
    if not valid_hostname(ascii_name):
        return None, problem(name, "malformed ASCII label(s)")
    return ascii_name, None


def icu_available() -> bool:
    return _icu() is not None


def convert(name: str, transitional: bool = False) -> Conversion:
    """midna_domain_to_ascii_create(): (A-label form, None), or (None, the warning)."""
    if not name.isascii() and not valid_utf8(name):
        return None, problem(name, "malformed UTF-8")
    icu = _icu()
    if icu is None:
        return _python_convert(name, transitional)
    return icu.convert(name, transitional)


@functools.lru_cache(maxsize=1024)
def domain_to_ascii(name: str) -> str | None:
    """The A-label form without the warning (for checks Postfix makes in another process,
    such as trivial-rewrite's address syntax check, whose warnings smtpd does not log)."""
    return convert(name)[0]


class IdnaCache:
    """midna_domain_to_ascii()'s per-process ctable: conversions, failures included, of the
    last `size` names; a name is converted (and its warning logged) when it is not cached.
    Entries are dropped after `max_age` seconds as the smtpd process that held them would
    be (max_idle), like the DNS list cache."""

    def __init__(self, size: int = MIDNA_CACHE_SIZE, transitional: bool = False,
                 max_age: float = 100.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.transitional, self.max_age, self.clock = size, transitional, max_age, clock
        self._entries: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    def lookup(self, name: str) -> Conversion:
        """(A-label form or None, the warning to log when the name was converted now)."""
        hit = self._entries.get(name)
        now = self.clock()
        if hit is not None and hit[0] > now:
            self._entries.move_to_end(name)
            return hit[1], None
        ascii_name, warning = convert(name, self.transitional)
        self._entries[name] = (now + self.max_age, ascii_name)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return ascii_name, warning

    def to_ascii(self, name: str, warn: Callable[[str], None]) -> str | None:
        """lookup(), the warning given to `warn`."""
        ascii_name, warning = self.lookup(name)
        if warning is not None:
            warn(warning)
        return ascii_name
