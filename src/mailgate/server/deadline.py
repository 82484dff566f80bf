"""How long the listener may wait for client I/O: smtpd_timeout as Postfix 3.7 applies it,
plus mailgate's overall smtpd_session_deadline. Pure arithmetic over a clock; no I/O."""

from __future__ import annotations

import math
from collections.abc import Callable

from mailgate.config.settings import SmtpdSettings


class Deadlines:
    """The time budget of one session's reads and writes.

    - `smtpd_per_request_deadline = no` (Postfix's default): `smtpd_timeout` limits each
      read and each write on its own.
    - `smtpd_per_request_deadline = yes`: `smtpd_timeout` is the budget for receiving a whole
      request (a command line; DATA or BDAT content), charged only with time spent waiting
      for input (vstream's deadline). While content is read, each read of N bytes gives the
      budget back N / `smtpd_min_data_rate` seconds, never beyond `smtpd_timeout`.
    - `smtpd_session_deadline` (mailgate; 0 = none): the session's wall-clock end, moved
      later by N / `smtpd_min_data_rate` seconds for N content bytes received, so a message
      that arrives at the minimum data rate is never cut by it.
    """

    __slots__ = ("_clock", "_left", "_per_request", "_rate", "_timeout", "session_end")

    def __init__(self, settings: SmtpdSettings, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._timeout = settings.timeout
        self._per_request = settings.per_request_deadline
        self._rate = float(settings.min_data_rate)
        self._left = settings.timeout
        self.session_end = (clock() + settings.session_deadline if settings.session_deadline
                            else math.inf)

    def new_request(self) -> None:
        """A request was complete: the next one gets a fresh budget (vstream's
        START_DEADLINE, which smtpd sets up per request)."""
        self._left = self._timeout

    def read_budget(self) -> float:
        """Seconds the next read may wait; 0 or less: time is up."""
        request = self._left if self._per_request else self._timeout
        return min(request, self.session_end - self._clock())

    def write_budget(self) -> float:
        """Seconds a write may wait for the client to take our output."""
        return min(self._timeout, self.session_end - self._clock())

    def charge_read(self, waited: float, received: int, content: bool) -> None:
        """Account for one read that waited `waited` seconds and got `received` bytes;
        `content`: the bytes are DATA or BDAT message content."""
        if self._per_request:
            self._left -= waited
            if content:
                self._left = min(self._left + received / self._rate, self._timeout)
        if content and self.session_end != math.inf:
            self.session_end += received / self._rate
