"""The engine's stage checks as the session calls them: one resolution per address per
command, a structured Reply made once (soft_bounce included), the `sleep` delay in the
verdict, and the session's state left as it was (candidates never written into it)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from mailgate.addressing import AddressResolver, Resolved
from mailgate.app import build_engine, build_resolver
from mailgate.config.config import Config
from mailgate.engine.context import CheckState, Client
from mailgate.engine.engine import Engine
from mailgate.engine.reply import PASS, Reply
from mailgate.maps import default_registry


@dataclasses.dataclass(frozen=True)
class CountingResolver(AddressResolver):
    """The address resolver, counting what it is asked (a fake below the engine)."""

    asked: list[str] = dataclasses.field(default_factory=list)

    def resolve(self, address: str) -> Resolved:
        self.asked.append(address)
        return super().resolve(address)


def _engine(tmp_path: Path, text: str) -> tuple[Engine, CountingResolver, list[str]]:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n"
                                      "mydestination = example.test\n" + text)
    cfg = Config.load(str(tmp_path), [])
    registry = default_registry()
    plain = build_resolver(cfg, registry, frozenset())
    fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(AddressResolver)}
    resolver = CountingResolver(**fields)
    lines: list[str] = []
    engine, _ = build_engine(cfg, registry, resolver, lines.append)
    return engine, resolver, lines


def _state() -> CheckState:
    return CheckState(Client("client.example", "192.0.2.1", 0), helo="client.example",
                      sender="s@sender.example", where="RCPT", protocol="ESMTP")


def test_rcpt_resolves_each_address_once(tmp_path: Path) -> None:
    access = tmp_path / "access"
    access.write_text("nobody@example.test REJECT\n")
    engine, resolver, _ = _engine(tmp_path, (
        "smtpd_delay_reject = yes\n"
        f"smtpd_sender_restrictions = check_sender_access texthash:{access}\n"
        "smtpd_recipient_restrictions = reject_non_fqdn_recipient, "
        f"check_recipient_access texthash:{access}, reject_unlisted_sender, "
        "reject_unauth_destination, reject_unlisted_recipient, permit\n"
        "local_recipient_maps = static:x\n"))
    st = _state()
    found = engine.address("user@example.test")
    assert not engine.bad_address(found, False)
    verdict = asyncio.run(engine.check_rcpt(st, "user@example.test", found))
    assert verdict is PASS
    assert sorted(resolver.asked) == ["s@sender.example", "user@example.test"]
    assert (st.sender, st.recipient, st.helo) == ("s@sender.example", None, "client.example")


def test_reply_is_made_once_with_soft_bounce(tmp_path: Path) -> None:
    engine, _, lines = _engine(tmp_path, "soft_bounce = yes\n"
                                         "smtpd_recipient_restrictions = reject\n")
    verdict = asyncio.run(engine.check_rcpt(_state(), "user@example.test"))
    text = "<user@example.test>: Recipient address rejected: Access denied"
    assert verdict.reply == Reply(454, "4.7.1", text)
    assert lines[-1] == (f"NOQUEUE: reject: RCPT from client.example[192.0.2.1]: 454 4.7.1 "
                         f"{text}; from=<s@sender.example> to=<user@example.test> "
                         "proto=ESMTP helo=<client.example>")


def test_sleep_is_a_delay_in_the_verdict(tmp_path: Path) -> None:
    engine, _, _ = _engine(tmp_path, "smtpd_delay_reject = yes\n"
                                     "smtpd_client_restrictions = sleep 2\n"
                                     "smtpd_recipient_restrictions = sleep 3, permit\n"
                                     "local_recipient_maps =\n")
    verdict = asyncio.run(engine.check_rcpt(_state(), "user@example.test"))
    assert (verdict.reply, verdict.delay) == (None, 5.0)
