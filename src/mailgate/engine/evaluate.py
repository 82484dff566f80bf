"""Evaluates stage restriction lists in Postfix's order and returns the deciding Action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailgate.config.config import Config
from mailgate.engine.actions import DUNNO, Action, Verdict, reject
from mailgate.engine.context import Request
from mailgate.engine.restrictions import REGISTRY, Env
from mailgate.errors import ConfigError

_RELAY_CONTROL = frozenset({"reject_unauth_destination", "defer_unauth_destination", "reject",
                            "defer", "defer_if_permit", "check_relay_domains"})


@dataclass(frozen=True)
class EngineSettings:
    relay_restrictions: tuple[str, ...]
    recipient_restrictions: tuple[str, ...]
    relay_before_recipient: bool
    reject_unlisted_recipient: bool

    @classmethod
    def from_config(cls, cfg: Config) -> EngineSettings:
        settings = cls(
            relay_restrictions=tuple(n.lower() for n in cfg.get_list("smtpd_relay_restrictions")),
            recipient_restrictions=tuple(
                n.lower() for n in cfg.get_list("smtpd_recipient_restrictions")),
            relay_before_recipient=cfg.get_bool("smtpd_relay_before_recipient_restrictions"),
            reject_unlisted_recipient=cfg.get_bool("smtpd_reject_unlisted_recipient"),
        )
        settings.check_relay_control()
        return settings

    def check_relay_control(self) -> None:
        """Refuse to start an open relay (smtpd.c: the mandatory relay-control check)."""
        for names in (self.relay_restrictions, self.recipient_restrictions):
            for name in names:
                if name == "permit":
                    break
                if name in _RELAY_CONTROL:
                    return
        raise ConfigError(
            "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify "
            "at least one working instance of: reject_unauth_destination, "
            "defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains")


class Engine:
    """Runs the RCPT-stage lists: relay and recipient restrictions, then unknown users."""

    def __init__(self, settings: EngineSettings, env: Env,
                 warn: Callable[[str], None] = lambda text: None) -> None:
        self.settings = settings
        self.env = env
        self.warn = warn

    def _run_list(self, names: tuple[str, ...], req: Request) -> Action:
        for name in names:
            func = REGISTRY.get(name)
            if func is None:
                self.warn(f'unknown smtpd restriction: "{name}"')
                return reject(451, "4.3.5", "Server configuration error")
            action = func(req, self.env)
            if action.verdict is not Verdict.DUNNO:
                return action
        return DUNNO

    def check_rcpt(self, req: Request) -> Action:
        """The reply-deciding Action for one RCPT (DUNNO or OK mean accept)."""
        if req.recipient.lower() == "postmaster":
            return DUNNO
        first, second = self.settings.relay_restrictions, self.settings.recipient_restrictions
        if not self.settings.relay_before_recipient:
            first, second = second, first
        result = self._run_list(first, req)
        if result.verdict is not Verdict.REJECT:
            result = self._run_list(second, req)
        if result.verdict is Verdict.REJECT:
            return result
        ran_unlisted = "reject_unlisted_recipient" in first + second
        if self.settings.reject_unlisted_recipient and not ran_unlisted:
            unlisted = REGISTRY["reject_unlisted_recipient"](req, self.env)
            if unlisted.verdict is Verdict.REJECT:
                return unlisted
        return result
