"""The timestamps of mail log lines: their text, and datetimes from it.

Both shapes Postfix writes are read: syslog's `Nov 26 07:11:00 host postfix/smtpd[42]: text`
(the year is inferred as pflogsumm does: a month after the current one is last year's) and
RFC 3339 `2026-11-26T07:11:00.123+00:00 host postfix/smtpd[42]: text`. Any syslog name is
accepted (`postfix`, `postfix-out`, `mailgate`, `mailgate/policyd`): Summary.consume takes
the program from what follows the last `/` of the tag.
"""

from __future__ import annotations

from datetime import datetime

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def stamp(line: str) -> str:
    """The timestamp text: syslog's fixed 15 characters, or RFC 3339 up to the space."""
    return line[:15] if line[3:4] == " " else line[:line.find(" ")]


def hour(line: str) -> str:
    """The timestamp cut to the hour (`Nov 26 07`, `2026-11-26T07`)."""
    return line[:9] if line[3:4] == " " else line[:13]


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
