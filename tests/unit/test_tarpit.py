"""The tarpit delay before each reply (spec §d) and the opt-in growing delay."""

from __future__ import annotations

from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.tarpit import tarpit_delay


def _settings(**params: str) -> SmtpdSettings:
    text = "".join(f"{k} = {v}\n" for k, v in params.items())
    return SmtpdSettings.from_config(Config.load(None, [], base_text=text))


def test_postfix_delay_is_flat_from_the_soft_limit() -> None:
    s = _settings(smtpd_soft_error_limit="3", smtpd_error_sleep_time="2s")
    assert [tarpit_delay(s, n) for n in range(7)] == [0, 0, 0, 2, 2, 2, 2]


def test_growing_delay_is_opt_in_and_capped() -> None:
    s = _settings(smtpd_soft_error_limit="3", smtpd_error_sleep_time="1s",
                  smtpd_error_sleep_growth="2s", smtpd_error_sleep_max="6s")
    assert [tarpit_delay(s, n) for n in range(8)] == [0, 0, 0, 1, 3, 5, 6, 6]


def test_defaults_are_postfix_defaults() -> None:
    s = _settings()
    assert (s.soft_error_limit, s.hard_error_limit, s.error_sleep_time) == (10, 20, 1.0)
    assert tarpit_delay(s, 9) == 0 and tarpit_delay(s, 10) == 1.0
