"""unix: tables, alone and behind proxy:, answer as Postfix's postmap -q does (checked against it here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mailgate.errors import MapConfigError
from mailgate.maps import default_registry


@pytest.mark.parametrize("spec", ["unix:passwd.byname", "proxy:unix:passwd.byname",
                                  "unix:group.byname"])
@pytest.mark.parametrize("key", ["root", "ROOT", "no-such-user-mg"])
def test_like_postmap(spec: str, key: str, tmp_path: Path) -> None:
    ours = default_registry().open(spec).lookup(key)
    postmap = shutil.which("postmap") or "/usr/sbin/postmap"
    if not Path(postmap).exists():
        pytest.skip("postmap is not installed (scripts/test-setup installs Postfix)")
    (tmp_path / "main.cf").write_text("")
    done = subprocess.run([postmap, "-c", str(tmp_path), "-q", key, spec.removeprefix("proxy:")],
                          capture_output=True, text=True, timeout=30)
    assert ours == (done.stdout.rstrip("\n") if done.returncode == 0 else None)


def test_the_default_local_recipient_maps_open() -> None:
    """Postfix's default local_recipient_maps (proxy:unix:passwd.byname $alias_maps) must
    open, or every local recipient would get 451 4.3.5."""
    table = default_registry().open("proxy:unix:passwd.byname")
    assert table.lookup("root") is not None and table.lookup("no-such-user-mg") is None


def test_unknown_unix_table() -> None:
    with pytest.raises(MapConfigError, match=r"unknown table: unix:shadow\.byname"):
        default_registry().open("unix:shadow.byname")
