"""anvil(8) in shared memory: per-client connection counts, event rates and their peaks.

Postfix's smtpd asks a separate anvil process over a socket; mailgate's workers and accept
process share this table instead (the master creates it before it forks). What anvil keeps
per (service, client), the table keeps per client key (client_key(): the address, or its
network under smtpd_client_ipv4/ipv6_prefix_length), hashed into 65,536 buckets:

- the number of connections (and, in one more slot, the total);
- one rate window per client, shared by its connections, messages (MAIL), recipients
  (RCPT), new TLS sessions and AUTH commands, as anvil's `start`: it begins with the first
  event and all five counts restart when `anvil_rate_time_unit` has passed
  (`start + unit < now`, whole seconds); the previous window's counts are kept for the
  sliding estimate (`anvil_rate_window = sliding`, ours);
- when the client's entry expires: anvil drops it `anvil_rate_time_unit` after the
  client's last connection ended; the entries alive are anvil's cache size.

The peaks (each rate, the connection count, the cache size) are what anvil logs as
`statistics:` lines; the master logs them (AnvilStatistics, decision 0062).
"""

from __future__ import annotations

import functools
import ipaddress
import mmap
import multiprocessing
import struct
import time
import zlib
from collections.abc import Callable

_BUCKETS = 65536
_SLOT = struct.Struct("=i")
_STAMP = struct.Struct("=q")
# per bucket: window start (s), the previous window's start, the counts in this window and
# in the previous one, both in EVENTS order
_RATE = struct.Struct("=qq5i5i")
_COUNTS = 16  # where the counts start in a _RATE record
_PEAK = struct.Struct("=iq120s")  # value, when (s), anvil's ident (`service:client`)
_CACHE = struct.Struct("=iiqq")  # entries alive, peak, when, entries ever made
_ALIVE = 1 << 62  # an entry's expiry while the client has connections: never
_INT_MAX = 2**31 - 1

EVENTS = ("connect", "mail", "rcpt", "newtls", "auth")  # anvil's rates, in record order
_EVENT = {name: index for index, name in enumerate(EVENTS)}
# anvil_status_dump()'s lines, in its order: (what, the peak's slot)
_REPORTED = (("connection rate", 0), ("connection count", 5), ("message rate", 1),
             ("recipient rate", 2), ("newtls rate", 3), ("auth rate", 4))


def client_key(addr: str, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> str:
    """The name anvil counts a client under: its address, or with a prefix length shorter
    than the address (Postfix 3.8's smtpd_client_ipv4_prefix_length and
    smtpd_client_ipv6_prefix_length) its network as inet_prefix_top() prints it:
    `2001:db8::/84`, `192.0.2.0/24`."""
    if ":" in addr:
        return addr if ipv6_prefix >= 128 else _network(addr, ipv6_prefix)
    return addr if ipv4_prefix >= 32 else _network(addr, ipv4_prefix)


@functools.lru_cache(maxsize=8192)
def _network(addr: str, bits: int) -> str:
    try:
        network = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    except ValueError:  # `unknown`: counted as it is
        return addr
    return f"{network.network_address}/{bits}"


def _ctime(when: int) -> str:
    """`%.15s` of ctime()+4, as anvil prints a peak's time: `Dec  3 06:57:37`."""
    return time.ctime(when)[4:19]


class ConnectionTable:
    """anvil's table for every worker and the accept process (see the module's docstring).

    Times are whole seconds, as anvil's event_time(); callers pass `now` (a clock is never
    read here but in disconnect()'s default), so tests drive it without sleeping.
    """

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _SLOT.size * (_BUCKETS + 1))
        self._rates = mmap.mmap(-1, _RATE.size * _BUCKETS)
        self._expires = mmap.mmap(-1, _STAMP.size * _BUCKETS)  # 0: no entry
        self._peaks = mmap.mmap(-1, _PEAK.size * (len(EVENTS) + 1))
        self._cache = mmap.mmap(-1, _CACHE.size)
        self._deaths = mmap.mmap(-1, _SLOT.size)
        self._lock = multiprocessing.Lock()

    def worker_died(self) -> None:
        """The master counts each worker that died (only the master writes this slot)."""
        _SLOT.pack_into(self._deaths, 0, self.deaths() + 1)

    def deaths(self) -> int:
        """Workers died so far: a change tells the queue-running worker to claim their mail."""
        value: int = _SLOT.unpack_from(self._deaths, 0)[0]
        return value

    @staticmethod
    def _bucket(key: str) -> int:
        return zlib.crc32(key.encode()) % _BUCKETS

    def _add(self, offset: int, delta: int) -> int:
        value: int = max(_SLOT.unpack_from(self._mem, offset)[0] + delta, 0)
        _SLOT.pack_into(self._mem, offset, value)
        return value

    # --- connections ---------------------------------------------------------------------
    def connect(self, key: str) -> tuple[int, int]:
        """Count a new connection; return (connections under `key`, all connections)."""
        with self._lock:
            return (self._add(self._bucket(key) * _SLOT.size, 1),
                    self._add(_BUCKETS * _SLOT.size, 1))

    def disconnect(self, key: str, now: float | None = None, unit: float = 60.0) -> None:
        """A connection ended; the client's last one starts its entry's `unit` seconds."""
        bucket = self._bucket(key)
        with self._lock:
            if self._add(bucket * _SLOT.size, -1) == 0 and self._expiry(bucket) == _ALIVE:
                end = int(time.time() if now is None else now) + max(int(unit), 1)
                _STAMP.pack_into(self._expires, bucket * _STAMP.size, end)
            self._add(_BUCKETS * _SLOT.size, -1)

    def _expiry(self, bucket: int) -> int:
        value: int = _STAMP.unpack_from(self._expires, bucket * _STAMP.size)[0]
        return value

    def register(self, key: str, ident: str, count: int, now: float, unit: float,
                 sliding: bool = False) -> int:
        """anvil's `connect` for a client it counts (smtpd asks only when a client limit
        is set and the client is not exempt): its entry (new ones add to the cache size),
        the connection rate, the peaks; returns the connection rate. `count` is the
        connection count that connect() returned."""
        bucket, seconds = self._bucket(key), int(now)
        with self._lock:
            expiry = self._expiry(bucket)
            fresh = expiry != _ALIVE and expiry <= seconds  # none, or expired: a new one
            if fresh:
                self._new_entry(seconds)
            _STAMP.pack_into(self._expires, bucket * _STAMP.size, _ALIVE)
            rate = self._count(bucket, 0, seconds, max(int(unit), 1), sliding, True, fresh)
            self._peak(0, rate, ident, seconds)
            self._peak(len(EVENTS), count, ident, seconds)
        return rate

    # --- rates ---------------------------------------------------------------------------
    def event(self, key: str, kind: str, now: float, unit: float, sliding: bool = False,
              ident: str = "", count: bool = True) -> int:
        """Count one event of `kind` (EVENTS) in the client's window and return its rate;
        with `count` false, the rate as it stands (anvil's newtls_status). `ident` names
        the client in the peaks (none: no peak is kept)."""
        index, seconds = _EVENT[kind], int(now)
        bucket = self._bucket(key)
        with self._lock:
            rate = self._count(bucket, index, seconds, max(int(unit), 1), sliding, count)
            if count and ident:
                self._peak(index, rate, ident, seconds)
        return rate

    def _count(self, bucket: int, index: int, now: int, unit: int, sliding: bool,
               add: bool, fresh: bool = False) -> int:
        """anvil's ANVIL_REMOTE_INCR_RATE on one record (under the lock): a window that
        has passed restarts every count at zero; the previous one is kept."""
        offset = bucket * _RATE.size
        record = _RATE.unpack_from(self._rates, offset)
        start: int = record[0]
        previous_start: int = record[1]
        current: int = record[2 + index]
        previous: int = record[7 + index]
        if fresh or start + unit < now:
            previous_start, previous, current = start, current, int(add)
            if add:
                counts = [0] * 5
                counts[index] = 1
                _RATE.pack_into(self._rates, offset, now, start, *counts, *record[2:7])
        elif add:
            current = min(current + 1, _INT_MAX)
            _SLOT.pack_into(self._rates, offset + _COUNTS + _SLOT.size * index, current)
        if not sliding or not previous:
            return current
        # ours: the previous window's part that overlaps the last `unit` seconds
        overlap = min(max(previous_start + 2 * unit - now, 0), unit)
        return current + previous * overlap // unit

    # --- peaks (anvil's statistics) ------------------------------------------------------
    def _peak(self, slot: int, value: int, ident: str, now: int) -> None:
        offset = slot * _PEAK.size
        if value > _SLOT.unpack_from(self._peaks, offset)[0]:
            _PEAK.pack_into(self._peaks, offset, value, now, ident.encode("utf-8", "replace"))

    def _new_entry(self, now: int) -> None:
        alive, peak, when, made = _CACHE.unpack_from(self._cache, 0)
        alive += 1
        if alive > peak:
            peak, when = alive, now
        _CACHE.pack_into(self._cache, 0, alive, peak, when, made + 1)

    def sweep(self, now: float) -> int:
        """Count the entries alive again (the master, twice a second: entries expire
        without an event) and return the count. Read without the lock; entries made
        meanwhile are added."""
        before, _, _, made_before = _CACHE.unpack_from(self._cache, 0)
        if not before:  # (entries are only made with the count going up)
            return 0
        alive: int = sum(map(int(now).__lt__, memoryview(self._expires).cast("q")))
        with self._lock:
            _, peak, when, made = _CACHE.unpack_from(self._cache, 0)
            alive += made - made_before
            _CACHE.pack_into(self._cache, 0, alive, peak, when, made)
        return alive

    def report(self, unit: float) -> list[str]:
        """anvil_status_dump(): a line for each peak since the last report (none without
        activity), which it resets. `unit` is anvil_rate_time_unit, as the lines show it."""
        lines = []
        with self._lock:
            for what, slot in _REPORTED:
                value, when, ident = _PEAK.unpack_from(self._peaks, slot * _PEAK.size)
                if value <= 0:
                    continue
                name = ident.rstrip(b"\0").decode("utf-8", "replace")
                amount = f"{value}" if slot == len(EVENTS) else f"{value}/{int(unit)}s"
                lines.append(f"statistics: max {what} {amount} for ({name}) at "
                             f"{_ctime(when)}")
                _SLOT.pack_into(self._peaks, slot * _PEAK.size, 0)
            alive, peak, when, made = _CACHE.unpack_from(self._cache, 0)
            if peak > 0:
                lines.append(f"statistics: max cache size {peak} at {_ctime(when)}")
                _CACHE.pack_into(self._cache, 0, alive, 0, when, made)
        return lines


class AnvilStatistics:
    """The master's part of anvil: the statistics lines every `anvil_status_update_time`
    (from the master's start) and at stop, each only after activity (anvil.c)."""

    def __init__(self, table: ConnectionTable, log: Callable[[str], None], interval: float,
                 unit: float, clock: Callable[[], float] = time.time) -> None:
        self.table, self.log, self.clock = table, log, clock
        self.interval, self.unit = interval, unit
        self.due = clock() + interval

    def configure(self, interval: float, unit: float) -> None:
        """A reload's anvil_status_update_time and anvil_rate_time_unit."""
        self.due += interval - self.interval
        self.interval, self.unit = interval, unit

    def tick(self) -> None:
        """One pass of the master's loop: entries expire; the lines when they are due."""
        now = self.clock()
        self.table.sweep(now)
        if now >= self.due:
            self.due = now + self.interval
            self.dump()

    def dump(self) -> None:
        for line in self.table.report(self.unit):
            self.log(line)
