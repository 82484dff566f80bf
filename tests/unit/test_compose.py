"""unionmap:, pipemap: and unix: tables."""

from __future__ import annotations

import pytest

from mailgate.errors import MapConfigError
from mailgate.maps import default_registry


def test_unionmap_joins_every_result() -> None:
    table = default_registry().open("unionmap:{inline:{a=1, b=2}, inline:{a=3}, static:9}")
    assert table.lookup("a") == "1,3,9"
    assert table.lookup("zzz") == "9"


def test_pipemap_feeds_results_forward() -> None:
    table = default_registry().open("pipemap:{inline:{a=b}, inline:{b=final}}")
    assert table.lookup("a") == "final"
    assert table.lookup("b") is None


def test_unix_passwd() -> None:
    table = default_registry().open("unix:passwd.byname")
    value = table.lookup("root")
    assert value is not None and value.startswith("root:") and ":0:0:" in value
    assert table.lookup("no-such-user-here") is None
    with pytest.raises(MapConfigError):
        default_registry().open("unix:shadow")
    with pytest.raises(MapConfigError):
        default_registry().open("unionmap:{}")
