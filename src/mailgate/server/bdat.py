"""BDAT (RFC 3030 CHUNKING) as Postfix 3.7 smtpd answers it: chunk states, refusals, queueing.

Postfix keeps a BDAT state per transaction (NONE, chunks accepted, ERROR). The first chunk
gets DATA's checks (recipients, smtpd_data_restrictions, logged as `reject: BDAT`); after any
refused chunk the following chunks are read and discarded with `551 ... after earlier error`
until BDAT LAST, which ends the transaction. Verified against a live Postfix 3.7.11.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import CheckState
from mailgate.engine.reply import Reply
from mailgate.server.transaction import Services, Transaction
from mailgate.smtp.protocol import Chunk, Command, ServerConnection, store_form

# RFC 3030 chunk sizes are decimal; Postfix takes them as off_t (at most 18 digits here).
_MAX_SIZE_DIGITS = 18


def crlf_octets(content: bytes, line_limit: int = 2048) -> int:
    """The size Postfix reports after BDAT LAST: the text as smtpd stores it, in records of
    at most `line_limit` octets, each counted with a CRLF ending. A line ending in LF gives
    len // limit + 1 records (a line of exactly the limit adds an empty one); an unterminated
    last line gives ceil(len / limit). Observed against Postfix 3.7.11."""
    if not content:
        return 0
    lines = content.split(b"\n")
    tail = lines.pop()  # after the last LF: b"" when the text ends with a line end
    records = sum(len(line) // line_limit + 1 for line in lines)
    records += -(-len(tail) // line_limit)
    return len(content) - len(lines) + 2 * records


class BdatCommands:
    """The BDAT handler and chunk completion; the attributes below are the Session's."""

    s: SmtpdSettings
    svc: Services
    conn: ServerConnection
    tx: Transaction
    chunk_refusal: Reply | str  # the reply for the chunk being discarded ("": accepted)
    st: CheckState
    bdat_size: int
    sleep: float

    if TYPE_CHECKING:  # provided by Session and the other mixins
        @property
        def namaddr(self) -> str:
            raise NotImplementedError

        @property
        def queue_id(self) -> str:
            raise NotImplementedError

        def reply(self, text: str | Reply) -> None:
            raise NotImplementedError

        def warn(self, text: str) -> None:
            raise NotImplementedError

        def only_recipient(self) -> str | None:
            raise NotImplementedError

        def no_recipients(self) -> str:
            raise NotImplementedError

        def count_result(self, verb: str, ok: bool) -> None:
            raise NotImplementedError

        def bare_newline(self, message: bool = False, where: str = "") -> bool:
            raise NotImplementedError

        def reset_transaction(self) -> None:
            raise NotImplementedError

        def message_too_big(self, verb: str, warn: bool = True) -> None:
            raise NotImplementedError

        async def end_of_data_rejected(self, verb: str) -> bool:
            raise NotImplementedError

        async def queue_message(self, content: bytes, verb: str, octets: int = 0) -> None:
            raise NotImplementedError

    async def bdat_cmd(self, cmd: Command) -> bool | None:
        """`BDAT size [LAST]`: a malformed command ends the session (521); otherwise the
        chunk is read next, kept or discarded (see `bdat_chunk`)."""
        if "CHUNKING" in self.s.discard_ehlo_keywords:  # not announced: not accepted
            self.reply("521 5.5.1 Error: command not implemented")
            return False
        args = cmd.tokens
        digits = args[1].value if len(args) >= 2 else ""
        last = len(args) == 3 and args[2].value.upper() == "LAST"
        if not (digits.isdigit() and digits.isascii() and len(digits) <= _MAX_SIZE_DIGITS) \
                or len(args) > 3 or (len(args) == 3 and not last):
            self.warn(f"{self.queue_id}: malformed BDAT command syntax from "
                      f"{self.namaddr}: {cmd.line[:100]}")
            self.reply("521 5.5.4 Syntax: BDAT count [LAST]")
            return False
        size = int(digits)
        self.chunk_refusal = await self._refusal(size, last)
        if self.chunk_refusal:
            self.conn.start_chunk(size, last, discard=True)
            return None
        tx = self.tx
        if tx.bdat is None:
            tx.bdat = bytearray()
        limit = self.s.message_size_limit
        tx.bdat_too_big = tx.bdat_too_big or bool(limit and len(tx.bdat) + size > limit)
        self.conn.start_chunk(size, last, discard=tx.bdat_too_big)
        self.bdat_size = size
        return None

    async def _refusal(self, size: int, last: bool) -> Reply | str:
        """Why this chunk is refused ("" if it is not), in Postfix's order of checks."""
        tx = self.tx
        if size == 0 and not last:
            self.warn(f"{self.queue_id}: null BDAT request from {self.namaddr}")
            return "551 5.7.1 Null BDAT request"
        if tx.bdat_failed:
            return f"551 5.0.0 Discarded {size} bytes after earlier error"
        if tx.bdat is None:  # the first chunk gets DATA's checks
            stale = not tx.recipients and self.st.rcpt_count > 0  # as in data_cmd
            if not tx.recipients and not stale:
                return self.no_recipients()
            verdict = await self.svc.engine.check_data(self.st, self.only_recipient())
            self.sleep += verdict.delay  # waited for before the chunk's reply
            if verdict.reply is not None:
                return verdict.reply
            if not stale:
                return ""
            return self.no_recipients()  # where Postfix 3.7.11 would crash (decision 0029)
        return ""

    def bare_newline_chunk(self, chunk: Chunk) -> bool:
        """smtpd_forbid_bare_newline = reject: a chunk with a bare <LF> is refused at once
        (`reject: BDAT content`, later chunks discarded); the last one at END-OF-MESSAGE.
        Either way the transaction ends, the session goes on (Postfix 3.7.11)."""
        if chunk.last:
            self.st.where = "END-OF-MESSAGE"
        if not self.bare_newline(message=True, where="" if chunk.last else "BDAT content"):
            return False
        self.count_result("bdat", False)
        self.tx.bdat_failed = not chunk.last
        return True

    async def bdat_chunk(self, chunk: Chunk) -> None:
        """The chunk's octets have arrived: answer, and after BDAT LAST queue the message."""
        if self.chunk_refusal:
            self.reply(self.chunk_refusal)
            self.chunk_refusal = ""
            self.count_result("bdat", False)
            if chunk.last:  # smtpd's mail_reset() without rcpt_reset(): the recipient
                st = self.st  # count (smtpd_recipient_limit) and the logged to=<> stay
                count, first = st.rcpt_count, st.recipient
                self.reset_transaction()
                st.rcpt_count, st.recipient = count, first
            else:
                self.tx.bdat_failed = True
            return
        tx = self.tx
        assert tx.bdat is not None
        if chunk.data.count(b"\n") != chunk.data.count(b"\r\n") and self.bare_newline_chunk(chunk):
            return
        tx.bdat += chunk.data
        if not chunk.last:
            self.reply(f"250 2.0.0 Ok: {self.bdat_size} bytes")
            self.count_result("bdat", True)
            return
        self.st.where = "END-OF-MESSAGE"
        if tx.bdat_too_big:
            self.message_too_big("bdat")
            return
        self.st.size = len(tx.bdat)
        if await self.end_of_data_rejected("bdat"):
            return
        content = store_form(bytes(tx.bdat))
        await self.queue_message(content, "bdat",
                                 crlf_octets(content, self.s.line_length_limit))
