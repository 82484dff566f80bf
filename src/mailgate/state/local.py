"""The one-machine state backend: a SQLite file in WAL mode shared by every worker process."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence

from mailgate.state.store import Change, Item, StateUnavailable

_SCHEMA = ("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
           "expires REAL NOT NULL) WITHOUT ROWID")
_INCR = ("INSERT INTO state (key, value, expires) VALUES (?1, ?2, ?3) ON CONFLICT (key) DO "
         "UPDATE SET value = CASE WHEN expires <= ?4 THEN ?2 ELSE CAST(value AS INTEGER) + ?2 "
         "END, expires = CASE WHEN expires <= ?4 THEN ?3 ELSE expires END RETURNING value")
_ADD = ("INSERT INTO state (key, value, expires) VALUES (?1, MAX(?2, 0), ?3) ON CONFLICT (key) "
        "DO UPDATE SET value = MAX(CASE WHEN expires <= ?4 THEN 0 ELSE CAST(value AS INTEGER) "
        "END + ?2, 0), expires = ?3 RETURNING value")
# counts(): the window, with its lifetime left
_INCR_LEFT = _INCR.replace("RETURNING value", "RETURNING value, expires")
# a node's share of a sum: a row KEY<US>NODE each, summed over the key's live rows
_SHARE_SET = "INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)"
_SHARE_DROP = "DELETE FROM state WHERE key = ?"
_SHARE_SUM = ("SELECT COALESCE(SUM(CAST(value AS INTEGER)), 0) FROM state "
              "WHERE key >= ? AND key < ? AND expires > ?")
_PURGE_EVERY = 4096  # writes between two removals of expired rows


class LocalStore:
    """Store in one SQLite database (WAL, synchronous=NORMAL: a commit costs no fsync; the
    state is advisory, a crash may forget the last commits). Each process opens its own
    connection on first use, so a store made before a fork works in every child. Calls
    are synchronous (tens of microseconds); a database locked longer than `timeout`
    seconds raises StateUnavailable."""

    shared = False  # this machine's alone (the counts stay per gateway)

    def __init__(self, path: str, clock: Callable[[], float] = time.time,
                 timeout: float = 0.2) -> None:
        self.path = path
        self.clock = clock
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._writes = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            try:
                db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
            except sqlite3.Error as exc:
                raise StateUnavailable(f"{self.path}: {exc}") from exc
            self._db, self._pid = db, os.getpid()
        return self._db

    def _run(self, sql: str, args: tuple[object, ...]) -> list[tuple[str | float | int, ...]]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StateUnavailable(f"{self.path}: {exc}") from exc

    def _wrote(self) -> None:
        self._writes += 1
        if not self._writes % _PURGE_EVERY:
            self._run("DELETE FROM state WHERE expires <= ?", (self.clock(),))

    async def get(self, key: str) -> str | None:
        rows = self._run("SELECT value FROM state WHERE key = ? AND expires > ?",
                         (key, self.clock()))
        return str(rows[0][0]) if rows else None

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._run("INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)",
                  (key, value, self.clock() + ttl))
        self._wrote()

    async def delete(self, key: str) -> bool:
        rows = self._run("DELETE FROM state WHERE key = ? RETURNING expires", (key,))
        return bool(rows) and float(rows[0][0]) > self.clock()

    async def incr(self, key: str, amount: int, ttl: float) -> int:
        now = self.clock()
        rows = self._run(_INCR, (key, amount, now + ttl, now))
        self._wrote()
        return int(rows[0][0])

    async def add(self, key: str, amount: int, ttl: float) -> int:
        now = self.clock()
        rows = self._run(_ADD, (key, amount, now + ttl, now))
        self._wrote()
        return int(rows[0][0])

    async def counts(self, changes: Sequence[Change]) -> list[tuple[int, float]]:
        out = []
        for c in changes:
            now = self.clock()
            if c.share:
                out.append((self._share(c, now), c.ttl))
                continue
            row = self._run(_INCR_LEFT, (c.key, c.amount, now + c.ttl, now))[0]
            out.append((int(row[0]), float(row[1]) - now))
        self._wrote()
        return out

    def _share(self, c: Change, now: float) -> int:
        if c.amount > 0:
            self._run(_SHARE_SET, (f"{c.key}\x1f{c.share}", str(c.amount), now + c.ttl))
        else:
            self._run(_SHARE_DROP, (f"{c.key}\x1f{c.share}",))
        return int(self._run(_SHARE_SUM, (c.key + "\x1f", c.key + "\x20", now))[0][0])

    async def items(self, prefix: str) -> list[Item]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._run("SELECT key, value, expires FROM state WHERE key LIKE ? ESCAPE '\\' "
                         "AND expires > ? ORDER BY key", (escaped + "%", self.clock()))
        return [Item(str(k), str(v), float(e)) for k, v, e in rows]

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    async def aclose(self) -> None:
        self.close()
