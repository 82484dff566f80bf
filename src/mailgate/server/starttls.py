"""STARTTLS and the TLS state of a session, as Postfix 3.7 smtpd answers and logs them.

`TlsCommands` is mixed into `Session`. The session only decides and logs; the listener does
the handshake (it owns the transport) between two commands: after `starttls_cmd` has queued
`220 2.0.0 Ready to start TLS` it sees `starttls_pending`, sends the reply, throws away any
plaintext the client pipelined behind STARTTLS (CVE-2011-0411), and calls `tls_started()`
or `tls_failed()`.
"""

from __future__ import annotations

import ssl

from mailgate.server.session_commands import SessionParts
from mailgate.server.stats import CommandStats
from mailgate.server.tls import TlsInfo, library_problem
from mailgate.smtp.protocol import Command

# smtpd.c's SMTPD_CMD_FLAG_PRE_TLS: what smtpd_tls_security_level = encrypt allows before TLS.
PRE_TLS = frozenset({"HELO", "EHLO", "XCLIENT", "XFORWARD", "STARTTLS", "NOOP", "QUIT"})


class TlsCommands(SessionParts):
    """STARTTLS, the `encrypt` gate, and what a TLS session changes; attributes are the
    Session's."""

    stats: CommandStats
    closing: bool
    error_count: int
    tls: TlsInfo | None
    starttls_pending: bool

    @property
    def starttls_offered(self) -> bool:
        """STARTTLS in the EHLO reply: TLS may or must be used, it is not active yet, and
        the keyword is not discarded."""
        return (self.tls is None and self.svc.tls_context is not None
                and self.s.tls.level != "none" and not self.s.tls.wrappermode
                and "STARTTLS" not in self.s.discard_ehlo_keywords)

    def tls_required(self, verb: str) -> bool:
        """smtpd_tls_security_level = encrypt: `530 5.7.0 Must issue a STARTTLS command
        first` to every command but the PRE_TLS ones until TLS is active."""
        if self.tls is not None or self.s.tls.level != "encrypt" or verb in PRE_TLS:
            return False
        self.reply("530 5.7.0 Must issue a STARTTLS command first")
        self.stats.count(verb.lower(), False)
        self.error_count += 1
        return True

    async def starttls_cmd(self, cmd: Command) -> bool | None:
        if len(cmd.tokens) != 1:
            self.reply("501 5.5.4 Syntax: STARTTLS")
            return False
        if self.tls is not None:
            self.reply("554 5.5.1 Error: TLS already active")
            return False
        if not self.starttls_offered:
            self.reply("502 5.5.1 Error: command not implemented")
            return False
        limit = self.s.new_tls_session_rate_limit
        rate = self.event_rate("newtls", False) if limit else None
        if rate is not None and rate > limit:  # already over: no handshake at all
            self.warn(f"Refusing STARTTLS request from {self.namaddr} for service "
                      f"{self.service}")
            self.reply(f"454 4.7.0 Error: too many new TLS sessions from {self.namaddr}")
            return False
        self.reply("220 2.0.0 Ready to start TLS")
        self.starttls_pending = True
        return None  # counted when the handshake is over: `starttls=1` or `starttls=0/1`

    def tls_started(self, info: TlsInfo, counted: bool = True) -> None:
        """The handshake succeeded (after STARTTLS, or at connect in wrapper mode): the
        client starts over (RFC 3207 4.2: forget its HELO and any transaction)."""
        self.starttls_pending = False
        self.tls = info
        if self.s.tls.loglevel >= 1:
            self.log(f"{info.trust} TLS connection established from {self.namaddr}: "
                     f"{info.summary()}{info.details}")
        if not info.reused and self.new_tls_session_over_limit():
            if counted:
                self.stats.count("starttls", False)
            self.reply(f"421 4.7.0 {self.s.myhostname} Error: too many new TLS sessions from "
                       f"{self.namaddr}")
            return
        if counted:
            self.stats.count("starttls", True)
        self.reset_transaction()
        self.st.helo = None  # helo_reset(): restrictions see no HELO until the next one
        self.st.encryption = (info.protocol, info.cipher, info.bits)
        self.st.ccert = info.ccert
        self.auth_forget()  # SASL starts over with smtpd_sasl_tls_security_options

    def tls_failed(self, exc: BaseException, counted: bool = True) -> None:
        """The handshake failed: Postfix's `SSL_accept error` lines; the session ends."""
        self.starttls_pending = False
        if counted:
            self.stats.count("starttls", False)
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            self.log(f"SSL_accept error from {self.namaddr}: -1")
            self.warn(library_problem(exc))
        elif isinstance(exc, TimeoutError):
            self.log(f"SSL_accept error from {self.namaddr}: Connection timed out")
        else:
            self.log(f"SSL_accept error from {self.namaddr}: lost connection")
        if not self.new_tls_session_over_limit():  # (over it, Postfix ends without a word)
            self.log(f"lost connection after {self.st.where} from {self.namaddr}")
        self.closing = True

    def new_tls_session_over_limit(self) -> bool:
        """smtpd_client_new_tls_session_rate_limit, after a handshake (a failed one counts):
        count the new session; over the limit, Postfix's warning."""
        limit = self.s.new_tls_session_rate_limit
        rate = self.event_rate("newtls", True) if limit else None
        if rate is None or rate <= limit:
            return False
        self.warn(f"New TLS session rate limit exceeded: {rate} from {self.namaddr} for "
                  f"service {self.service}")
        return True

    def received_protocol(self) -> str:
        """The `with` word of `Received:`: ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848); SMTP
        stays SMTP."""
        protocol = self.st.protocol
        if protocol != "ESMTP":
            return protocol
        return (protocol + ("S" if self.tls is not None else "")
                + ("A" if self.st.sasl_username is not None else ""))

    def received_tls(self) -> str:
        """smtpd_tls_received_header = yes: the `(using ...)` lines of `Received:`."""
        if self.tls is None or not self.s.tls.received_header:
            return ""
        info = self.tls
        text = f"\t(using {info.summary()}"
        details = info.details.lstrip().replace(" client-signature", "\n\t client-signature")
        text += f"\n\t {details})" if details else ")"
        return text + f"\n\t({received_ccert(info)})\n"


def received_ccert(info: TlsInfo) -> str:
    """The client-certificate line of `Received:` (smtpd.c, with smtpd_tls_received_header)."""
    if not info.asked:
        return "No client certificate requested"
    cert = info.ccert
    if cert is None:
        return "Client did not present a certificate"
    verified = "verified OK" if cert.trusted else "not verified"
    return f'Client CN "{cert.subject}", Issuer "{cert.issuer}" ({verified})'
