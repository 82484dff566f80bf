"""What the restriction engine sees of a session: the client, the envelope so far, and the
per-transaction results the engine leaves behind (smtpd's SMTPD_STATE, restricted to that)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Client name lookup status (smtpd.h SMTPD_PEER_CODE_*).
NAME_OK, NAME_TEMP, NAME_PERM, NAME_FORGED = 2, 4, 5, 6


@dataclass
class Client:
    name: str  # verified name or "unknown"
    addr: str
    port: int
    reverse_name: str = ""  # the PTR name, unverified ("unknown" when there is none)
    name_status: int = NAME_OK
    reverse_status: int = NAME_OK
    peer: str = ""  # the address of the TCP peer (XCLIENT does not change it)
    server_addr: str = ""  # the local end of the connection (policy requests)
    server_port: int = 0

    def __post_init__(self) -> None:
        if not self.reverse_name:
            self.reverse_name = self.name
        if not self.peer:
            self.peer = self.addr

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.addr}]"


@dataclass(frozen=True, slots=True)
class ClientCert:
    """A TLS client certificate the client presented: subject and issuer names (CN; the
    issuer's O without a CN), its fingerprints in smtpd_tls_fingerprint_digest
    (`AB:CD:...`), and whether it verified against smtpd_tls_CAfile/CApath."""

    subject: str
    issuer: str
    fingerprint: str
    pkey_fingerprint: str
    trusted: bool


@dataclass(frozen=True, slots=True)
class Pending:
    """A remembered defer_if_permit / defer_if_reject reply: used later if it comes to that."""

    code: int
    dsn: str
    text: str
    hard: bool = False  # a software or resource error: never turned into a warning


@dataclass
class Marks:
    """What restrictions did to the transaction: access actions that change the queued message."""

    discard: bool = False
    hold: bool = False
    filter: str = ""
    redirect: str = ""
    bcc: list[str] = field(default_factory=list)
    prepend: list[str] = field(default_factory=list)


@dataclass
class CheckState:
    """The session's state, kept here by the session itself (never copied in before a check):
    the client, the HELO name, the transaction so far, and what restrictions left behind.

    A check's candidate HELO name, sender or recipient is not written here: the engine gets
    it as an argument and keeps it in its Evaluation. `recipient` is smtpd's
    state->recipient, the first recipient accepted, which later checks log as `to=<>`."""

    client: Client
    namaddr: str = ""
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    rcpt_count: int = 0  # recipients accepted (kept after a refused message, as smtpd)
    where: str = "CONNECT"
    protocol: str = "SMTP"
    queue_id: str | None = None
    ill_pipelining: bool = False
    smtputf8: bool = False  # MAIL FROM ... SMTPUTF8: non-ASCII domains are then allowed
    ccert: ClientCert | None = None  # the TLS client certificate presented, if any
    encryption: tuple[str, str, int] | None = None  # TLS (protocol, cipher, bits), once on
    sasl_method: str | None = None  # after a successful AUTH (smtpd's state->sasl_*)
    sasl_username: str | None = None
    sasl_sender: str | None = None  # MAIL AUTH= (not <>), until mail_reset()
    # what a policy request tells besides the above (smtpd's state->instance etc.)
    instance: str = ""  # set when MAIL is accepted
    size: int = 0  # MAIL SIZE=, then the message's size once it is received
    policy_pinned: dict[str, Any] = field(default_factory=dict)  # see policy.client.request
    trace: list[str] | None = None  # `mailgate check`: what each restriction decided
    marks: Marks = field(default_factory=Marks)
    # defer_if_permit carried from stage to stage (client → helo → sender → recipient)
    dip_client: Pending | None = None
    dip_helo: Pending | None = None
    dip_sender: Pending | None = None
    sender_rcptmap_checked: bool = False

    def __post_init__(self) -> None:
        if not self.namaddr:
            self.namaddr = self.client.namaddr

    def discard_marks(self) -> None:
        """What restrictions left on the transaction goes with a refused MAIL."""
        self.marks = Marks()
        self.sender_rcptmap_checked = False

    def mail_reset(self) -> None:
        """What smtpd's mail_reset() clears."""
        self.sender = None
        self.sasl_sender = None
        self.queue_id = None
        self.smtputf8 = False
        self.instance = ""
        self.size = 0
        self.discard_marks()

    def rcpt_reset(self) -> None:
        """What smtpd's rcpt_reset() clears."""
        self.recipient = None
        self.rcpt_count = 0

    def reset_transaction(self) -> None:
        self.mail_reset()
        self.rcpt_reset()
