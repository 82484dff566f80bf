"""anvil's table (mailgate.anvil): windows, peaks, entries and statistics, on a clock handed in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailgate.anvil import AnvilStatistics, ConnectionTable, client_key
from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.errors import ConfigError

T = 1_700_000_000  # a whole second, as anvil's event_time()
UNIT = 60
IDENT = "smtp:192.0.2.1"


def at(when: int) -> str:
    return time.ctime(when)[4:19]


@pytest.fixture
def table() -> ConnectionTable:
    return ConnectionTable()


def test_one_window_for_every_rate_restarts_after_the_unit(table: ConnectionTable) -> None:
    """anvil.c ANVIL_REMOTE_INCR_RATE: the window starts with the first connection and
    restarts only when `start + unit < now`; a restart zeroes every rate of the client."""
    table.connect("192.0.2.1")
    assert table.register("192.0.2.1", IDENT, 1, T, UNIT) == 1
    assert [table.event("192.0.2.1", "mail", T + n, UNIT) for n in (0, 30, UNIT)] == [1, 2, 3]
    assert table.event("192.0.2.1", "rcpt", T + UNIT, UNIT) == 1
    assert table.event("192.0.2.1", "mail", T + UNIT + 1, UNIT) == 1  # a new window ...
    # ... for the other rates too, though they did not count in it yet
    assert table.event("192.0.2.1", "rcpt", T + UNIT + 1, UNIT, count=False) == 0
    assert table.event("192.0.2.1", "connect", T + UNIT + 1, UNIT, count=False) == 0
    assert table.event("192.0.2.9", "mail", T, UNIT) == 1  # another client: its own


def test_a_look_does_not_count(table: ConnectionTable) -> None:
    for _ in range(3):
        table.event("192.0.2.1", "newtls", T, UNIT)
    assert table.event("192.0.2.1", "newtls", T + 1, UNIT, count=False) == 3
    assert table.event("192.0.2.1", "newtls", T + 2, UNIT) == 4
    assert table.event("192.0.2.1", "newtls", T + UNIT + 5, UNIT, count=False) == 0


def test_the_sliding_window_keeps_the_overlapping_part_of_the_last_one(
        table: ConnectionTable) -> None:
    """Ours (anvil_rate_window = sliding): after a restart, the previous window's count
    weighs by how much of it lies in the last `unit` seconds."""
    for _ in range(10):
        table.event("192.0.2.1", "mail", T, UNIT, sliding=True)
    # the window of T ends at T+60; at T+61 a new one starts, 59 s of the old one overlap
    assert table.event("192.0.2.1", "mail", T + 61, UNIT, sliding=True) == 1 + 10 * 59 // 60
    assert table.event("192.0.2.1", "mail", T + 90, UNIT, sliding=True) == 2 + 10 * 30 // 60
    assert table.event("192.0.2.1", "mail", T + 120, UNIT, sliding=True) == 3
    # the same counts read as fixed windows: only the current one
    assert table.event("192.0.2.1", "mail", T + 120, UNIT, count=False) == 3


def test_statistics_lines_as_anvil_logs_them_then_reset(table: ConnectionTable) -> None:
    table.connect("192.0.2.1")
    table.register("192.0.2.1", IDENT, 1, T, UNIT)
    for n in range(4):
        table.event("192.0.2.1", "mail", T + n, UNIT, ident=IDENT)
    table.event("192.0.2.1", "rcpt", T + 7, UNIT, ident=IDENT)
    table.event("192.0.2.1", "rcpt", T + 8, UNIT)  # no ident: no peak
    assert table.report(UNIT) == [
        f"statistics: max connection rate 1/60s for (smtp:192.0.2.1) at {at(T)}",
        f"statistics: max connection count 1 for (smtp:192.0.2.1) at {at(T)}",
        f"statistics: max message rate 4/60s for (smtp:192.0.2.1) at {at(T + 3)}",
        f"statistics: max recipient rate 1/60s for (smtp:192.0.2.1) at {at(T + 7)}",
        f"statistics: max cache size 1 at {at(T)}",
    ]
    assert table.report(UNIT) == []  # nothing since
    table.event("192.0.2.1", "auth", T + 9, UNIT, ident=IDENT)
    table.event("192.0.2.1", "newtls", T + 9, UNIT, ident=IDENT)
    assert table.report(UNIT) == [
        f"statistics: max newtls rate 1/60s for (smtp:192.0.2.1) at {at(T + 9)}",
        f"statistics: max auth rate 1/60s for (smtp:192.0.2.1) at {at(T + 9)}",
    ]


def test_a_peak_names_the_client_that_made_it(table: ConnectionTable) -> None:
    for key, count in (("192.0.2.1", 1), ("192.0.2.2", 1), ("192.0.2.2", 2), ("192.0.2.1", 2)):
        table.connect(key)
        table.register(key, f"smtp:{key}", count, T, UNIT)
    lines = table.report(UNIT)
    # ties keep the first client (anvil updates a peak only when it is exceeded)
    assert lines[0] == f"statistics: max connection rate 2/60s for (smtp:192.0.2.2) at {at(T)}"
    assert lines[1] == f"statistics: max connection count 2 for (smtp:192.0.2.2) at {at(T)}"
    assert lines[2] == f"statistics: max cache size 2 at {at(T)}"


def test_an_entry_lives_a_unit_after_the_last_connection(table: ConnectionTable) -> None:
    """anvil drops a client `anvil_rate_time_unit` after its last disconnect; a new entry
    adds to the cache size and starts a new window."""
    for key in ("192.0.2.1", "192.0.2.2"):
        table.connect(key)
        table.register(key, f"smtp:{key}", 1, T, UNIT)
        table.disconnect(key, T + 5, UNIT)
    table.report(UNIT)
    assert table.sweep(T + 5 + UNIT - 1) == 2
    table.connect("192.0.2.1")  # back before its entry expired: the same entry, window
    assert table.register("192.0.2.1", IDENT, 1, T + UNIT, UNIT) == 2
    assert "cache size" not in " ".join(table.report(UNIT))
    assert table.sweep(T + 5 + UNIT) == 1  # 192.0.2.2's entry is gone
    table.connect("192.0.2.2")
    assert table.register("192.0.2.2", "smtp:192.0.2.2", 1, T + 5 + UNIT, UNIT) == 1
    assert table.report(UNIT)[-1] == f"statistics: max cache size 2 at {at(T + 5 + UNIT)}"


def test_counts_and_the_total(table: ConnectionTable) -> None:
    assert table.connect("192.0.2.1") == (1, 1)
    assert table.connect("192.0.2.1") == (2, 2)
    assert table.connect("192.0.2.2") == (1, 3)
    table.disconnect("192.0.2.1", T, UNIT)
    assert table.connect("192.0.2.1") == (2, 3)


@pytest.mark.parametrize(("addr", "v4", "v6", "key"), [
    ("192.0.2.77", 32, 84, "192.0.2.77"),
    ("192.0.2.77", 24, 84, "192.0.2.0/24"),
    ("2001:db8::1234:5678:9abc:def0", 32, 84, "2001:db8::1234:5000:0:0/84"),
    ("2001:db8::1234:5fff:1:2", 32, 84, "2001:db8::1234:5000:0:0/84"),
    ("2001:db8::1", 32, 64, "2001:db8::/64"),
    ("2001:db8::1", 32, 128, "2001:db8::1"),
    ("unknown", 24, 84, "unknown"),
])
def test_client_key_is_the_address_or_its_network(addr: str, v4: int, v6: int,
                                                  key: str) -> None:
    """Postfix 3.8's smtpd_client_ipv4/ipv6_prefix_length, printed as inet_prefix_top()."""
    assert client_key(addr, v4, v6) == key


def test_statistics_every_update_time_only_after_activity(table: ConnectionTable) -> None:
    now = [float(T)]
    lines: list[str] = []
    statistics = AnvilStatistics(table, lines.append, interval=600, unit=UNIT,
                                 clock=lambda: now[0])
    table.connect("192.0.2.1")
    table.register("192.0.2.1", IDENT, 1, T, UNIT)
    now[0] = T + 599
    statistics.tick()
    assert lines == []
    now[0] = T + 600
    statistics.tick()
    assert len(lines) == 3 and lines[-1] == f"statistics: max cache size 1 at {at(T)}"
    now[0] = T + 1200
    statistics.tick()  # no activity in the period: nothing
    assert len(lines) == 3
    table.event("192.0.2.1", "mail", T + 1300, UNIT, ident=IDENT)
    statistics.dump()  # at stop
    assert lines[3:] == [f"statistics: max message rate 1/60s for (smtp:192.0.2.1) at "
                         f"{at(T + 1300)}"]


def _settings(tmp_path: Path, text: str) -> SmtpdSettings:
    (tmp_path / "main.cf").write_text(text)
    return SmtpdSettings.from_config(Config.load(str(tmp_path)))


def test_settings_of_the_limits_and_our_parameters(tmp_path: Path) -> None:
    s = _settings(tmp_path, "")
    assert (s.message_rate_limit, s.recipient_rate_limit, s.rate_window_sliding) == (0, 0, False)
    assert (s.client_ipv4_prefix_length, s.client_ipv6_prefix_length) == (32, 84)  # as 3.8
    assert s.anvil  # smtpd_client_connection_count_limit = 50: anvil counts clients
    s = _settings(tmp_path, "smtpd_client_connection_count_limit = 0\n"
                            "anvil_rate_window = Sliding\n")
    assert s.rate_window_sliding and not s.anvil
    assert _settings(tmp_path, "smtpd_client_connection_count_limit = 0\n"
                               "smtpd_client_recipient_rate_limit = 5\n").anvil
    with pytest.raises(ConfigError, match="anvil_rate_window = moving"):
        _settings(tmp_path, "anvil_rate_window = moving\n")
    with pytest.raises(ConfigError, match="129 > 128"):
        _settings(tmp_path, "smtpd_client_ipv6_prefix_length = 129\n")
