"""Start-up of the policy clients: a bad check_policy_service endpoint is reported at the
origin (main.cf, line N) of the restriction list that names it, handed in by the caller."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.app import restriction_lists
from mailgate.config.config import Config
from mailgate.errors import ConfigError
from mailgate.policy.client import clients


def config(tmp_path: Path, text: str) -> Config:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n" + text)
    return Config.load(str(tmp_path), [])


def test_one_client_per_endpoint(tmp_path: Path) -> None:
    cfg = config(tmp_path, "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:9,"
                           " reject_unauth_destination, check_policy_service inet:127.0.0.1:9\n"
                           "smtpd_restriction_classes = policy\n"
                           "policy = check_policy_service unix:private/policy\n")
    assert sorted(clients(cfg, restriction_lists(cfg))) == [
        "inet:127.0.0.1:9", "unix:private/policy"]


@pytest.mark.parametrize(("text", "policyd", "line"), [
    ("smtpd_recipient_restrictions = check_policy_service tcp:h:1\n", False, 2),
    ("smtpd_restriction_classes = policy\npolicy = check_policy_service tcp:h:1\n", False, 3),
    ("policyd_restrictions = check_policy_service tcp:h:1\n", True, 2),
])
def test_bad_endpoint_names_its_list(tmp_path: Path, text: str, policyd: bool, line: int) -> None:
    cfg = config(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"main\.cf, line {line}: invalid transport name: tcp"):
        clients(cfg, restriction_lists(cfg, policyd))
