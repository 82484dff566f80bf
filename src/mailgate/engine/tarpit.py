"""The tarpit: how long a reply waits once a client has made too many errors."""

from __future__ import annotations

from mailgate.config.settings import SmtpdSettings


def tarpit_delay(s: SmtpdSettings, errors: int) -> float:
    """The tarpit: every reply waits `smtpd_error_sleep_time` once the error count reached
    the soft limit (Postfix 2.1+: constant). Opt-in beyond Postfix: `smtpd_error_sleep_growth`
    more for each further error, at most `smtpd_error_sleep_max`."""
    if errors < s.soft_error_limit:
        return 0.0
    base = s.error_sleep_time
    if s.error_sleep_growth:
        extra = s.error_sleep_growth * (errors - s.soft_error_limit)
        return min(base + extra, max(s.error_sleep_max, base))
    return base
