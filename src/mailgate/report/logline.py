"""Splits mail log lines into time, program and text, and turns their timestamps into datetimes.

Both shapes Postfix writes are read: syslog's `Nov 26 07:11:00 host postfix/smtpd[42]: text`
(the year is inferred as pflogsumm does: a month after the current one is last year's) and
RFC 3339 `2026-11-26T07:11:00.123+00:00 host postfix/smtpd[42]: text`. Any syslog name is
accepted (`postfix`, `postfix-out`, `mailgate`, `mailgate/policyd`): the program is what
follows the last `/` of the tag.
"""

from __future__ import annotations

from datetime import datetime

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def split(line: str) -> tuple[str, str, str] | None:
    """(timestamp text, program, message) of a Postfix-shaped line, None for other lines."""
    i = line.find("]: ")
    if i < 0:
        return None
    j = line.rfind(" ", 0, i)
    tag = line[j + 1:i]
    b = tag.find("[")
    slash = tag.rfind("/", 0, b)
    if b < 0 or slash < 0:
        return None
    stamp = line[:15] if line[3:4] == " " else line[:line.find(" ")]
    return stamp, tag[slash + 1:b], line[i + 3:].rstrip("\r\n")


class Clock:
    """Timestamp text → datetime (naive, local to the log), with a one-entry cache: a log's
    consecutive lines mostly share their second."""

    def __init__(self, now: datetime | None = None) -> None:
        now = now or datetime.now()
        self.year, self.month = now.year, now.month
        self._last = ""
        self._value: datetime | None = None

    def parse(self, stamp: str) -> datetime | None:
        if stamp == self._last:
            return self._value
        self._last = stamp
        self._value = self._convert(stamp)
        return self._value

    def _convert(self, stamp: str) -> datetime | None:
        try:
            if stamp[3:4] == " ":
                month = MONTHS[stamp[:3]]
                year = self.year - 1 if month > self.month else self.year
                return datetime(year, month, int(stamp[4:6]), int(stamp[7:9]),
                                int(stamp[10:12]), int(stamp[13:15]))
            return datetime.fromisoformat(stamp).replace(tzinfo=None, microsecond=0)
        except (KeyError, ValueError):
            return None


def parse_bound(text: str) -> datetime:
    """A --since/--until value: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` or `...THH:MM[:SS]`."""
    try:
        return datetime.fromisoformat(text.strip()).replace(tzinfo=None)
    except ValueError:
        raise ValueError(f"bad date {text!r} (use YYYY-MM-DD or 'YYYY-MM-DD HH:MM')") from None
