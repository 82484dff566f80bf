"""What an smtpd worker holds for SMTP AUTH: its Dovecot client and the settings that shape AUTH.

Built once per worker from the frozen SaslSettings; an unknown security option or a malformed
smtpd_sasl_path is a ConfigError at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailgate.config.settings import SaslSettings
from mailgate.sasl.dovecot import DovecotClient, parse_sasl_path
from mailgate.sasl.protocol import SecurityOptions


@dataclass(frozen=True, slots=True)
class SaslServer:
    """`exempt(addr, name)`: smtpd_sasl_exceptions_networks (no AUTH in EHLO for them).
    The other AUTH settings are the session's (SmtpdSettings.sasl)."""

    client: DovecotClient
    options: SecurityOptions  # smtpd_sasl_security_options
    tls_options: SecurityOptions  # smtpd_sasl_tls_security_options
    exempt: Callable[[str, str], bool]

    @classmethod
    def build(cls, settings: SaslSettings, base: Path, warn: Callable[[str], None],
              exempt: Callable[[str, str], bool]) -> SaslServer | None:
        """None unless smtpd_sasl_auth_enable = yes."""
        if not settings.enabled:
            return None
        return cls(
            client=DovecotClient(parse_sasl_path(settings.path, base), warn=warn),
            options=SecurityOptions.parse(" ".join(settings.security_options)),
            tls_options=SecurityOptions.parse(" ".join(settings.tls_security_options),
                                              "smtpd_sasl_tls_security_options"),
            exempt=exempt)
