"""The regular-expression engines behind regexp: and pcre: tables: the C libraries Postfix uses.

regexp: tables are POSIX regular expressions (glibc regcomp/regexec: leftmost-longest
matching, `[[:alpha:]]`, `\\<`, BRE when `x` is given), and pcre: tables are PCRE2
(libpcre2-8, byte mode: Postfix 3.7 never sets PCRE2_UTF). Python's `re` is neither, so
both are called through ctypes, in the C locale, on the key's bytes: matches, capture
offsets, group counts and error texts are then the ones Postfix gets
(docs/decisions/0028-regex-engines.md). Where a library is missing, `re` stands in.
A compiled pattern keeps one match buffer: use a table from one thread at a time (the
server's lookups all run on its event loop).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

# regcomp() flags (regex.h)
REG_EXTENDED, REG_ICASE, REG_NEWLINE, REG_NOSUB = 1, 2, 4, 8
_REG_NOMATCH = 1

# pcre2_compile() options (pcre2.h)
PCRE2_CASELESS = 0x00000008
PCRE2_DOLLAR_ENDONLY = 0x00000010
PCRE2_DOTALL = 0x00000020
PCRE2_EXTENDED = 0x00000080
PCRE2_MULTILINE = 0x00000400
PCRE2_UNGREEDY = 0x00040000
PCRE2_ANCHORED = 0x80000000
_PCRE2_INFO_CAPTURECOUNT = 4
_PCRE2_ERROR_NOMATCH = -1

Spans = list[tuple[int, int]]  # (start, end) byte offsets per group; (-1, -1) if unset


class RegexError(Exception):
    """A pattern the library refuses; `offset` is PCRE2's error offset (None for POSIX)."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled pattern: `groups` capture groups; `search(subject)` gives the group spans
    (group 0 first), or None for no match (a matching error counts as no match, as in
    Postfix)."""

    groups: int
    search: Callable[[bytes], Spans | None]
    test: Callable[[bytes], bool]  # search() without building the spans


class _RegexT(ctypes.Structure):
    # glibc's struct re_pattern_buffer, and room to spare
    _fields_ = [("buffer", ctypes.c_void_p), ("allocated", ctypes.c_size_t),
                ("used", ctypes.c_size_t), ("syntax", ctypes.c_ulong),
                ("fastmap", ctypes.c_void_p), ("translate", ctypes.c_void_p),
                ("re_nsub", ctypes.c_size_t), ("flags", ctypes.c_uint),
                ("spare", ctypes.c_char * 64)]


class _RegMatch(ctypes.Structure):
    _fields_ = [("rm_so", ctypes.c_int), ("rm_eo", ctypes.c_int)]


class _Posix:
    """glibc regcomp()/regexec(), run under a thread-local C locale (bytes are characters)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.regcomp = libc.regcomp
        self.regcomp.argtypes = [ctypes.POINTER(_RegexT), ctypes.c_char_p, ctypes.c_int]
        self.regcomp.restype = ctypes.c_int
        self.regexec = libc.regexec
        self.regexec.argtypes = [ctypes.POINTER(_RegexT), ctypes.c_char_p, ctypes.c_size_t,
                                 ctypes.POINTER(_RegMatch), ctypes.c_int]
        self.regexec.restype = ctypes.c_int
        self.regerror = libc.regerror
        self.regerror.argtypes = [ctypes.c_int, ctypes.POINTER(_RegexT), ctypes.c_char_p,
                                  ctypes.c_size_t]
        self.regerror.restype = ctypes.c_size_t
        self.regfree = libc.regfree
        self.regfree.argtypes = [ctypes.POINTER(_RegexT)]
        self.regfree.restype = None
        self.uselocale = libc.uselocale
        self.uselocale.argtypes = [ctypes.c_void_p]
        self.uselocale.restype = ctypes.c_void_p
        newlocale = libc.newlocale
        newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
        newlocale.restype = ctypes.c_void_p
        self.c_locale = newlocale(1 << 0, b"C", None)  # LC_CTYPE_MASK: one handle, kept
        if not self.c_locale:
            raise OSError("newlocale(C) failed")

    def compile(self, pattern: bytes, flags: int) -> Compiled:
        """regcomp() with Postfix's flags; RegexError carries regerror()'s text."""
        expr = _RegexT()
        old = self.uselocale(self.c_locale)
        try:
            error = self.regcomp(ctypes.byref(expr), pattern.split(b"\0", 1)[0], flags)
        finally:
            self.uselocale(old)
        if error:
            buf = ctypes.create_string_buffer(256)
            self.regerror(error, ctypes.byref(expr), buf, 256)
            raise RegexError(buf.value.decode("utf-8", "surrogateescape"))
        groups = int(expr.re_nsub)
        nmatch = 0 if flags & REG_NOSUB else groups + 1
        pmatch = (_RegMatch * max(nmatch, 1))()
        regexec, uselocale, c_locale = self.regexec, self.uselocale, self.c_locale
        ref = ctypes.byref(expr)

        def search(subject: bytes) -> Spans | None:
            prev = uselocale(c_locale)
            try:
                rc = regexec(ref, subject, nmatch, pmatch, 0)
            finally:
                uselocale(prev)
            if rc:  # REG_NOMATCH, or an error that Postfix also treats as no match
                return None
            return [(m.rm_so, m.rm_eo) for m in pmatch[:nmatch]]

        def test(subject: bytes) -> bool:
            prev = uselocale(c_locale)
            try:
                rc: int = regexec(ref, subject, 0, pmatch, 0)
                return rc == 0
            finally:
                uselocale(prev)

        weakref.finalize(search, self.regfree, ref)  # `ref` keeps the regex_t alive
        return Compiled(groups, search, test)


class _Pcre2:
    """libpcre2-8 in byte mode, as Postfix's dict_pcre calls it."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self.compile_ = lib.pcre2_compile_8
        self.compile_.argtypes = [ctypes.c_char_p, sz, ctypes.c_uint32,
                                  ctypes.POINTER(ctypes.c_int), ctypes.POINTER(sz), vp]
        self.compile_.restype = vp
        self.error_message = lib.pcre2_get_error_message_8
        self.error_message.argtypes = [ctypes.c_int, ctypes.c_char_p, sz]
        self.error_message.restype = ctypes.c_int
        self.pattern_info = lib.pcre2_pattern_info_8
        self.pattern_info.argtypes = [vp, ctypes.c_uint32, vp]
        self.pattern_info.restype = ctypes.c_int
        self.md_create = lib.pcre2_match_data_create_from_pattern_8
        self.md_create.argtypes = [vp, vp]
        self.md_create.restype = vp
        self.match = lib.pcre2_match_8
        self.match.argtypes = [vp, ctypes.c_char_p, sz, sz, ctypes.c_uint32, vp, vp]
        self.match.restype = ctypes.c_int
        self.ovector = lib.pcre2_get_ovector_pointer_8
        self.ovector.argtypes = [vp]
        self.ovector.restype = ctypes.POINTER(sz)
        self.code_free = lib.pcre2_code_free_8
        self.code_free.argtypes = [vp]
        self.code_free.restype = None
        self.md_free = lib.pcre2_match_data_free_8
        self.md_free.argtypes = [vp]
        self.md_free.restype = None

    def message(self, code: int) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.error_message(code, buf, 256)
        if n < 0:
            return f"unexpected pcre2 error code {code}"
        return buf.value.decode("utf-8", "surrogateescape")

    def compile(self, pattern: bytes, options: int) -> Compiled:
        """pcre2_compile() with PCRE2_ZERO_TERMINATED semantics (the pattern ends at a NUL)."""
        pattern = pattern.split(b"\0", 1)[0]
        error, offset = ctypes.c_int(0), ctypes.c_size_t(0)
        code = self.compile_(pattern, len(pattern), options, ctypes.byref(error),
                             ctypes.byref(offset), None)
        if not code:
            raise RegexError(self.message(error.value), offset.value)
        count = ctypes.c_uint32(0)
        self.pattern_info(code, _PCRE2_INFO_CAPTURECOUNT, ctypes.byref(count))
        md = self.md_create(code, None)
        if not md:
            self.code_free(code)
            raise MemoryError("pcre2_match_data_create_from_pattern")
        groups = int(count.value)
        pairs = groups + 1
        match, ovector, unset = self.match, self.ovector(md), ctypes.c_size_t(-1).value

        def search(subject: bytes) -> Spans | None:
            rc = match(code, subject, len(subject), 0, 0, md, None)
            if rc < 0:  # no match; a matching error also counts as none in dict_pcre
                return None
            spans = []
            for i in range(pairs):
                start = ovector[2 * i]
                spans.append((-1, -1) if start == unset else (start, ovector[2 * i + 1]))
            return spans

        def test(subject: bytes) -> bool:
            rc: int = match(code, subject, len(subject), 0, 0, md, None)
            return rc >= 0

        weakref.finalize(search, self._free, code, md)
        return Compiled(groups, search, test)

    def _free(self, code: int, md: int) -> None:
        self.md_free(md)
        self.code_free(code)


def _python_search(compiled: re.Pattern[bytes]) -> Callable[[bytes], Spans | None]:
    def search(subject: bytes) -> Spans | None:
        m = compiled.search(subject)
        if m is None:
            return None
        return [m.span(i) for i in range(compiled.groups + 1)]
    return search


def _python_posix(pattern: bytes, flags: int) -> Compiled:
    """Stand-in when glibc is not there: Python `re` on bytes (not leftmost-longest)."""
    pyflags = (re.IGNORECASE if flags & REG_ICASE else 0) | \
        (re.MULTILINE if flags & REG_NEWLINE else re.DOTALL)
    try:
        compiled = re.compile(pattern, pyflags)
    except re.error as exc:
        raise RegexError(str(exc.msg)) from exc
    return Compiled(compiled.groups, _python_search(compiled),
                    lambda subject: compiled.search(subject) is not None)


def _python_pcre(pattern: bytes, options: int) -> Compiled:
    """Stand-in when libpcre2-8 is not there: Python `re` on bytes, offsets of `re`'s errors."""
    pyflags = 0
    for bit, flag in ((PCRE2_CASELESS, re.IGNORECASE), (PCRE2_MULTILINE, re.MULTILINE),
                      (PCRE2_DOTALL, re.DOTALL), (PCRE2_EXTENDED, re.VERBOSE)):
        if options & bit:
            pyflags |= flag
    if options & PCRE2_ANCHORED:
        pattern = b"(?:" + pattern + b")"
    try:
        compiled = re.compile(pattern, pyflags)
    except re.error as exc:
        raise RegexError(str(exc.msg), exc.pos or 0) from exc
    search = _python_search(compiled)
    if options & PCRE2_ANCHORED:
        def anchored(subject: bytes) -> Spans | None:
            m = compiled.match(subject)
            return None if m is None else [m.span(i) for i in range(compiled.groups + 1)]
        search = anchored
    return Compiled(compiled.groups, search, lambda subject: search(subject) is not None)


@functools.cache
def posix_compiler() -> Callable[[bytes, int], Compiled]:
    """regcomp() for regexp: tables (glibc through ctypes, else the `re` stand-in)."""
    if platform.libc_ver()[0] == "glibc":
        try:
            return _Posix(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")).compile
        except (OSError, AttributeError):
            pass
    return _python_posix


@functools.cache
def pcre_compiler() -> Callable[[bytes, int], Compiled]:
    """pcre2_compile() for pcre: tables (libpcre2-8 through ctypes, else the `re` stand-in)."""
    for name in (ctypes.util.find_library("pcre2-8"), "libpcre2-8.so.0"):
        if not name:
            continue
        try:
            return _Pcre2(ctypes.CDLL(name)).compile
        except (OSError, AttributeError):
            continue
    return _python_pcre
