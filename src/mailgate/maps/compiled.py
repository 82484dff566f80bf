"""Compiled tables for hash:, btree: and lmdb: (one read-only, mmap-friendly file format).

`FILE.db` (`FILE.lmdb` for lmdb:) is an open-addressing hash table: a header, a slot array of
little-endian 64-bit record offsets (0 = empty) sized to twice the key count, then records
`u32 key length, u32 value length, key, value`. Slots are found by CRC-32 of the key with
linear probing. Built into a temporary file, fsync'd and renamed over the old one, so a reader
never sees a half-written table; readers mmap it (pages are loaded on demand: a million-entry
table costs almost no resident memory); a server re-opens a replaced file (base.ReloadingMap).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from array import array
from dataclasses import dataclass, field

from mailgate.errors import MapConfigError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.casefold import fold
from mailgate.maps.simple import parse_source

MAGIC = b"MGDB0001"
_HEADER = struct.Struct("<8sQQ")  # magic, slot count, entry count
_RECORD = struct.Struct("<II")
_SLOT = struct.Struct("<Q")
SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb"}


def build(path: str, entries: dict[str, str]) -> None:
    """Write `entries` as a compiled table at `path`, atomically."""
    nslots = max(8, 2 * len(entries))
    slots = array("Q", bytes(8 * nslots))
    data = bytearray()
    base = _HEADER.size + 8 * nslots
    for key, value in entries.items():
        k = key.encode("utf-8", "surrogateescape")
        v = value.encode("utf-8", "surrogateescape")
        i = zlib.crc32(k) % nslots
        while slots[i]:
            i = i + 1 if i + 1 < nslots else 0
        slots[i] = base + len(data)
        data += _RECORD.pack(len(k), len(v))
        data += k
        data += v
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(MAGIC, nslots, len(entries)))
        f.write(slots.tobytes())
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


@dataclass
class CompiledMap:
    """A compiled table mapped into memory (the server wraps it in a ReloadingMap, which
    re-opens it when `postmap` replaced the file)."""

    spec: str
    path: str
    fold_case: bool = True
    fixed: bool = True
    utf8: bool = True
    _mm: mmap.mmap | None = field(default=None, repr=False)
    _nslots: int = 0

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise MapConfigError(f"open database {self.path}: {exc.strerror}") from exc
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if os.fstat(fd).st_size else None
        finally:
            os.close(fd)
        if mm is None or mm[:8] != MAGIC:
            raise MapConfigError(f"{self.path}: not a mailgate compiled table "
                                 f"(run mailgate postmap {self.spec})")
        _, self._nslots, _ = _HEADER.unpack_from(mm, 0)
        self._mm = mm

    def lookup(self, key: str) -> str | None:
        if self._mm is None:
            self._open()
        mm = self._mm
        assert mm is not None
        k = (fold(key, self.utf8) if self.fold_case else key).encode("utf-8", "surrogateescape")
        nslots = self._nslots
        i = zlib.crc32(k) % nslots
        unpack = _RECORD.unpack_from
        slot = _SLOT.unpack_from
        base = _HEADER.size
        while True:
            (offset,) = slot(mm, base + 8 * i)
            if not offset:
                return None
            klen, vlen = unpack(mm, offset)
            start = offset + 8
            if klen == len(k) and mm[start : start + klen] == k:
                return mm[start + klen : start + klen + vlen].decode("utf-8", "surrogateescape")
            i = i + 1 if i + 1 < nslots else 0

    def items(self) -> list[tuple[str, str]]:
        """Every entry, in file order (for `postmap -s`)."""
        if self._mm is None:
            self._open()
        mm = self._mm
        assert mm is not None
        out = []
        pos = _HEADER.size + 8 * self._nslots
        while pos < len(mm):
            klen, vlen = _RECORD.unpack_from(mm, pos)
            key = mm[pos + 8 : pos + 8 + klen].decode("utf-8", "surrogateescape")
            value = mm[pos + 8 + klen : pos + 8 + klen + vlen].decode("utf-8", "surrogateescape")
            out.append((key, value))
            pos += 8 + klen + vlen
        return out


def postmap_warnings(table: str, warnings: list[str], fold_case: bool = True,
                     utf8: bool = True) -> list[str]:
    """postmap(1)'s wording of the source parser's warnings: a duplicate names the `table`
    and the stored (folded) key, not the line; a line without a value is not "-- ignoring
    this line" (dict_thash says so)."""
    out = []
    for w in warnings:
        if ": duplicate entry: " in w:
            key = w.split(": duplicate entry: ", 1)[1][1:-1]
            w = f'{table}: duplicate entry: "{fold(key, utf8) if fold_case else key}"'
        elif w.endswith(_NO_VALUE):
            w = w[: -len(" -- ignoring this line")]
        out.append(w)
    return out


_NO_VALUE = "expected format: key whitespace value -- ignoring this line"


def compile_source(kind: str, source: str, fold_case: bool,
                   utf8: bool = True) -> tuple[str, list[str]]:
    """`postmap TYPE:source`: parse the text file, write source + suffix; return (path, warnings)."""
    try:
        with open(source, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MapConfigError(f"open {source}: {exc.strerror}") from exc
    entries, warnings = parse_source(text, source, fold_case, utf8)
    path = source + SUFFIX[kind]
    # Postfix names a Berkeley DB file, but an LMDB table by type:name
    warnings = postmap_warnings(f"lmdb:{source}" if kind == "lmdb" else path, warnings,
                                fold_case, utf8)
    build(path, entries)
    return path, warnings


def register(registry: Registry) -> None:
    def opener(kind: str) -> object:
        def open_compiled(name: str, options: MapOptions) -> CompiledMap:
            table = CompiledMap(f"{kind}:{name}", name + SUFFIX[kind], options.fold_case,
                                utf8=options.utf8)
            table._open()
            return table

        return open_compiled

    for kind in SUFFIX:
        registry.register(kind, opener(kind))  # type: ignore[arg-type]
