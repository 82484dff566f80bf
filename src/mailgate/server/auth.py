"""SMTP AUTH (RFC 4954) as Postfix 3.7 smtpd offers, answers and logs it; Dovecot checks.

`AuthCommands` is mixed into `Session`. An AUTH command starts an exchange with the Dovecot
auth server (sasl/dovecot.py); while it asks for more (`334`), the session's next input line
is the client's response (`auth_response`), read with smtpd_sasl_response_limit as its line
limit. A failed AUTH counts as an error, so the tarpit slows password guessing as in Postfix.
"""

from __future__ import annotations

from mailgate.maps.casefold import printable
from mailgate.sasl.dovecot import AuthUnavailable, Exchange
from mailgate.sasl.protocol import Challenge, Failure, Outcome, Success, TemporaryFailure
from mailgate.sasl.server import SaslServer
from mailgate.server.session_commands import SessionParts
from mailgate.server.sharedlimits import TEMPFAIL
from mailgate.server.stats import CommandStats
from mailgate.server.tls import TlsInfo
from mailgate.smtp.protocol import Command, ServerConnection


class AuthCommands(SessionParts):
    """AUTH, what it adds to EHLO, MAIL's log line and Received:, and the SASL state of the
    session (in `st`, where restrictions and policy requests read it)."""

    stats: CommandStats
    error_count: int
    tls: TlsInfo | None
    conn: ServerConnection
    auth_exchange: Exchange | None
    auth_mechanisms: tuple[str, ...] | None  # what this session announces (None: not asked)
    sasl_reply: str  # smtpd's state->sasl_reply: the last SASL text, kept between AUTHs

    @property
    def sasl(self) -> SaslServer | None:
        """SASL is active: enabled, and (smtpd_tls_auth_only) TLS is on when it must be."""
        sasl = self.svc.sasl
        if sasl is None or (self.s.tls.auth_only and self.tls is None):
            return None
        return sasl

    async def sasl_mechanisms(self) -> tuple[str, ...]:
        """The mechanisms Dovecot offers that the security options in force allow (asked
        once per session, again after STARTTLS); () when Dovecot was never reachable."""
        sasl = self.sasl
        if sasl is None:
            return ()
        if self.auth_mechanisms is None:
            options = sasl.tls_options if self.tls is not None else sasl.options
            try:
                self.auth_mechanisms = await sasl.client.mechanisms(options)
            except AuthUnavailable:  # warned by the client; Postfix's smtpd would exit
                self.auth_mechanisms = ()
        return self.auth_mechanisms

    async def auth_keywords(self) -> list[str]:
        """`AUTH mech...` (and `AUTH=mech...` for broken_sasl_auth_clients) for EHLO; none
        for smtpd_sasl_exceptions_networks clients."""
        sasl = self.sasl
        if sasl is None or "AUTH" in self.s.discard_ehlo_keywords:
            return []
        client = self.st.client
        if sasl.exempt(client.addr, client.name):
            return []
        mechanisms = await self.sasl_mechanisms()
        if not mechanisms:
            return []
        words = " ".join(mechanisms)
        broken = self.s.sasl.broken_clients
        return [f"AUTH {words}", f"AUTH={words}"] if broken else [f"AUTH {words}"]

    async def auth_cmd(self, cmd: Command) -> bool | None:
        if self.s.helo_required and not self.st.helo:  # smtpd_sasl_auth_cmd() asks first
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return False
        sasl = self.sasl
        if sasl is None or "AUTH" in self.s.discard_ehlo_keywords \
                or not await self.sasl_mechanisms():  # Dovecot never reached (decision 0055)
            self.reply("503 5.5.1 Error: authentication not enabled")
            return False
        if self.st.sender is not None:
            self.reply("503 5.5.1 Error: MAIL transaction in progress")
            return False
        if await self.over_auth_rate():
            return False
        if self.st.sasl_username is not None:
            self.reply("503 5.5.1 Error: already authenticated")
            return False
        if len(cmd.tokens) not in (2, 3):
            self.reply("501 5.5.4 Syntax: AUTH mechanism")
            return False
        mechanism = cmd.tokens[1].value
        initial = cmd.tokens[2].value if len(cmd.tokens) == 3 else None
        client = self.st.client
        exchange = sasl.client.exchange(
            mechanism, offered=await self.sasl_mechanisms(), local_addr=client.server_addr,
            remote_addr=client.addr, secured=self.tls is not None)
        return self._auth_outcome(exchange, await exchange.step(initial))

    async def over_auth_rate(self) -> bool:
        """smtpd_client_auth_rate_limit: every AUTH counts; over the limit, `450 4.7.1`.
        With shared state the rate is every node's."""
        limit = self.s.auth_rate_limit
        if not limit:
            return False
        rate = await self.counted_rate("auth")
        if rate == TEMPFAIL:
            self.reply("451 4.3.5 Server configuration problem")
            return True
        if rate is None or rate <= limit:
            return False
        self.warn(f"AUTH command rate limit exceeded: {rate} from {self.namaddr} for service "
                  f"{self.service}")
        self.reply(f"450 4.7.1 Error: too many AUTH commands from {self.st.client.addr}")
        return True

    async def auth_response(self, cmd: Command) -> None:
        """The client's answer to a `334` challenge: `*` gives up."""
        exchange = self.auth_exchange
        assert exchange is not None
        self.auth_exchange = None
        self.conn.set_line_limit(self.s.line_length_limit)
        if cmd.too_long:
            exchange.cancel()
            self.reply("500 5.5.6 SASL response limit exceeded")
            self._auth_counted(False)
            return
        if cmd.line == "*":
            exchange.cancel()
            self.warn(f"{self.namaddr}: SASL {exchange.mechanism} authentication aborted")
            self.reply("501 5.7.0 Authentication aborted")
            self._auth_counted(False)
            return
        ok = self._auth_outcome(exchange, await exchange.step(cmd.line))
        if ok is not None:
            self._auth_counted(ok)

    def _auth_outcome(self, exchange: Exchange, outcome: Outcome) -> bool | None:
        """Reply to a step's outcome: True/False when the exchange is over, None when the
        client must answer a challenge (the command is counted then)."""
        mechanism = exchange.mechanism
        if isinstance(outcome, Challenge):
            self.sasl_reply = outcome.data
            self.reply(f"334 {outcome.data}")
            self.auth_exchange = exchange
            self.conn.set_line_limit(self.s.sasl.response_limit)
            return None
        if isinstance(outcome, Success):
            self.reply("235 2.7.0 Authentication successful")
            self.st.sasl_username = printable(outcome.user, False)
            self.st.sasl_method = printable(mechanism, False)
            return True
        if isinstance(outcome, Failure) or outcome.sets_reply:
            self.sasl_reply = outcome.reason
        reason = self.sasl_reply or "(reason unavailable)"  # Postfix's one reply buffer
        user = outcome.user if isinstance(outcome, Failure) else None
        self.warn(f"{self.namaddr}: SASL {mechanism[:100]} authentication failed: {reason}, "
                  f"sasl_username={(user or '(unavailable)')[:100]}")
        if isinstance(outcome, TemporaryFailure):
            self.reply(f"454 4.7.0 Temporary authentication failure: {reason}")
        else:
            self.reply(f"535 5.7.8 Error: authentication failed: {reason}")
        return False

    def _auth_counted(self, ok: bool) -> None:
        self.stats.count("auth", ok)
        if not ok:
            self.error_count += 1

    def auth_forget(self) -> None:
        """STARTTLS: SASL starts over with the TLS security options (and no login)."""
        self.auth_mechanisms = None
        self.sasl_reply = ""
        self.st.sasl_method = self.st.sasl_username = None

    def sasl_logged(self) -> str:
        """What the `client=` line adds: `, sasl_method=…, sasl_username=…, sasl_sender=…`."""
        st = self.st
        text = ""
        if st.sasl_method is not None:
            text += f", sasl_method={st.sasl_method}"
        if st.sasl_username is not None:
            text += f", sasl_username={st.sasl_username}"
        if st.sasl_sender is not None:
            text += f", sasl_sender={printable(st.sasl_sender, self.s.smtputf8_enable)}"
        return text

    def received_auth(self) -> str:
        """smtpd_sasl_authenticated_header = yes: `(Authenticated sender: user)`."""
        if not self.s.sasl.authenticated_header or self.st.sasl_username is None:
            return ""
        return f"\t(Authenticated sender: {self.st.sasl_username})\n"
