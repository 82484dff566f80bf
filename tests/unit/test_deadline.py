"""smtpd_timeout, smtpd_per_request_deadline, smtpd_min_data_rate and smtpd_session_deadline
as the listener's time budget (server/deadline.py), driven by a fake clock."""

from __future__ import annotations

import pytest

from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.server.deadline import Deadlines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deadlines(*overrides: str) -> tuple[Deadlines, Clock]:
    clock = Clock()
    settings = SmtpdSettings.from_config(Config.load(None, overrides))
    return Deadlines(settings, clock), clock


def test_postfix_defaults() -> None:
    settings = SmtpdSettings.from_config(Config.load(None, ()))
    assert (settings.timeout, settings.per_request_deadline, settings.min_data_rate,
            settings.session_deadline) == (300.0, False, 500, 3600.0)
    stress = SmtpdSettings.from_config(Config.load(None, ("stress=yes",)))
    assert (stress.timeout, stress.per_request_deadline) == (10.0, True)
    legacy = SmtpdSettings.from_config(Config.load(None, ("smtpd_per_record_deadline=yes",)))
    assert legacy.per_request_deadline


def test_per_read_timeout_is_not_used_up_by_a_trickle() -> None:
    d, clock = deadlines("smtpd_timeout=10s", "smtpd_session_deadline=0")
    for _ in range(100):  # one byte every 2 s, 200 s in all
        clock.now += 2
        d.charge_read(2.0, 1, content=False)
        assert d.read_budget() == 10.0


def test_per_request_deadline_is_used_up_by_a_trickle_and_recharged_per_request() -> None:
    d, clock = deadlines("smtpd_timeout=10s", "smtpd_per_request_deadline=yes")
    for _ in range(4):
        clock.now += 2
        d.charge_read(2.0, 1, content=False)
    assert d.read_budget() == pytest.approx(2.0)
    d.new_request()
    assert d.read_budget() == 10.0


def test_content_at_the_minimum_rate_keeps_the_request_alive() -> None:
    d, clock = deadlines("smtpd_timeout=10s", "smtpd_per_request_deadline=yes",
                         "smtpd_min_data_rate=500")
    for _ in range(60):  # 500 bytes/s for 60 s: never runs out, never grows past 10 s
        clock.now += 1
        d.charge_read(1.0, 500, content=True)
        assert d.read_budget() == pytest.approx(10.0)
    for _ in range(19):  # 250 bytes/s: loses half a second per second
        clock.now += 1
        d.charge_read(1.0, 250, content=True)
    assert d.read_budget() == pytest.approx(0.5)
    clock.now += 1
    d.charge_read(1.0, 250, content=True)
    assert d.read_budget() <= 0


def test_session_deadline_bounds_everything_and_grows_with_content() -> None:
    d, clock = deadlines("smtpd_timeout=300s", "smtpd_session_deadline=60s",
                         "smtpd_min_data_rate=500")
    clock.now += 50
    assert d.read_budget() == pytest.approx(10.0)
    assert d.write_budget() == pytest.approx(10.0)
    d.charge_read(0.0, 5000, content=True)  # 5000 content bytes: 10 s more
    assert d.read_budget() == pytest.approx(20.0)
    d.charge_read(0.0, 5000, content=False)  # command bytes earn nothing
    assert d.read_budget() == pytest.approx(20.0)
    clock.now += 20
    assert d.read_budget() <= 0


def test_session_deadline_zero_is_off() -> None:
    d, clock = deadlines("smtpd_timeout=5s", "smtpd_session_deadline=0")
    clock.now += 10**9
    assert d.read_budget() == 5.0
