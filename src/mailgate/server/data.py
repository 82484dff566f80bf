"""DATA and the end of a message (DATA or BDAT): data restrictions, size, queueing, `250`.

`DataCommands` extends `TransactionCommands` (MAIL/RCPT) and is mixed into `Session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailgate.queue.store import Envelope, Incoming
from mailgate.server.headers import (
    add_missing_headers,
    cut_long_headers,
    logged_message_id,
    received_header,
)
from mailgate.server.transaction import (
    WRITE_ERROR,
    TransactionCommands,
    routed_recipients,
)
from mailgate.smtp.protocol import Command, Message


class DataCommands(TransactionCommands):
    """DATA, end-of-data checks and queueing; the attributes are the Session's."""

    if TYPE_CHECKING:  # provided by TlsCommands
        def received_protocol(self) -> str:
            raise NotImplementedError

        def received_tls(self) -> str:
            raise NotImplementedError

        def received_auth(self) -> str:  # provided by AuthCommands
            raise NotImplementedError

    # DATA / BDAT ------------------------------------------------------------------------
    def no_recipients(self) -> str:
        """DATA's and the first BDAT's reply when no RCPT was accepted."""
        return "503 5.5.1 Error: need RCPT command" if self.st.sender is None \
            else "554 5.5.1 Error: no valid recipients"

    async def data_cmd(self, cmd: Command) -> bool | None:
        if self.tx.in_bdat:
            self.reply("503 5.5.1 Error: DATA after BDAT")
            return False
        # After a refused BDAT chunk and BDAT LAST, Postfix keeps the recipient count (even
        # into the next MAIL transaction): DATA then passes its "need RCPT" test and runs
        # the data restrictions.
        stale = not self.tx.recipients and self.st.rcpt_count > 0
        if not self.tx.recipients and not stale:
            self.reply(self.no_recipients())
            return False
        if len(cmd.tokens) != 1:
            self.reply("501 5.5.4 Syntax: DATA")
            return False
        verdict = await self.svc.engine.check_data(self.st, self.only_recipient())
        self.sleep += verdict.delay
        if verdict.reply is not None:
            self.reply(verdict.reply)
            return False
        if stale:  # Postfix 3.7.11's smtpd dies here (signal 11); decision 0029
            self.reply(self.no_recipients())
            return False
        self.reply("354 End data with <CR><LF>.<CR><LF>")  # the core now reads the text
        return None

    async def end_of_data(self, message: Message) -> None:
        self.st.where = "END-OF-MESSAGE"
        if message.bare_newline and self.bare_newline(message=True):
            self.count_result("data", False)
            return
        if message.too_big:
            self.message_too_big("data")
            return
        self.st.size = message.size
        if await self.end_of_data_rejected("data"):
            return
        await self.queue_message(message.content, "data")

    async def end_of_data_rejected(self, verb: str) -> bool:
        """smtpd_end_of_data_restrictions: a reject drops the message."""
        verdict = await self.svc.engine.check_eod(self.st, self.only_recipient())
        self.sleep += verdict.delay
        if verdict.reply is None:
            return False
        self.reply(verdict.reply)
        self.count_result(verb, False)
        # As Postfix 3.7: the message is dropped but the MAIL transaction stays open (MAIL
        # gets "nested MAIL command" until RSET), its queue id stays in the log lines and
        # its recipients count against the limit (both kept in the session's CheckState).
        tx = self.tx
        tx.queue_id = ""  # a later RCPT starts another queue file (and logs client=)
        tx.recipients = []
        tx.bdat = None
        tx.bdat_too_big = False
        tx.bdat_failed = verb == "bdat"  # RCPT, DATA: "after BDAT" (another BDAT: see 0029)
        return True

    def message_too_big(self, verb: str, warn: bool = True) -> None:
        """552 for a message over message_size_limit. smtpd warns when the text it read was
        too big; a queue file pushed over the limit by the added headers is cleanup's call
        and gets the same reply without that warning (as in Postfix)."""
        if warn:
            self.warn(f"{self.queue_id}: queue file size limit exceeded")
        self.reply("552 5.3.4 Error: message file too big")
        self.count_result(verb, False)
        self.reset_transaction()

    def queue_write_failed(self, queue_id: str, incoming: Incoming | None, queue: str,
                           exc: Exception) -> None:
        """cleanup's `write queue file: <error>` warning (ENOSPC, EIO, a failed fsync); no
        trace of the file is left, not even one renamed before its directory fsync failed."""
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if isinstance(cause, OSError):
            self.svc.log.log("cleanup", f"warning: {queue_id}: write queue file: "
                                        f"{cause.strerror}")
        else:
            self.warn(f"{queue_id}: {exc}")
        if incoming is not None:
            self.svc.store.abort(incoming, queue)
            self.tx.incoming = None

    def count_result(self, verb: str, ok: bool) -> None:
        self.stats.count(verb, ok)
        if not ok:
            self.error_count += 1

    async def queue_message(self, content: bytes, verb: str, octets: int = 0) -> None:
        """Add headers, write and fsync the queue file, then say `250 ... queued as`."""
        tx, st = self.tx, self.st
        assert tx.queue_id and st.sender is not None
        now = self.svc.clock()
        queue_id = tx.queue_id
        rcpts = [r.address for r in tx.recipients]
        content = cut_long_headers(content, self.s.header_size_limit, self.s.line_length_limit)
        helo = st.helo or ""
        header = received_header(helo, self.client.name, self.client.addr,
                                 self.s.myhostname, self.s.mail_name,
                                 self.received_protocol(), queue_id, rcpts, now,
                                 self.received_tls() + self.received_auth())
        if self.client.addr in self.svc.local_addresses:
            content, message_id = add_missing_headers(content, queue_id, st.sender,
                                                      self.s.myhostname, now)
        else:
            message_id = logged_message_id(content)
        marks = st.marks
        prepend = "".join(f"{line}\n" for line in marks.prepend).encode("utf-8", "replace")
        text = prepend + header + content
        size = len(text) + text.count(b"\n")  # Postfix counts message size with CRLF
        if self.s.message_size_limit and size > self.s.message_size_limit:
            self.message_too_big(verb, warn=False)  # the limit applies to the queue file
            return
        envelope = Envelope(queue_id, st.sender, routed_recipients(tx.recipients, marks), now,
                            self.client.name, self.client.addr, helo, st.protocol, size,
                            message_id)
        if marks.filter:
            envelope.extra["filter"] = marks.filter
        queue = "hold" if marks.hold else "active"
        if message_id and not marks.discard:  # cleanup logs it before the file is done
            self.svc.log.log("cleanup", f"{queue_id}: message-id={message_id}")
        delivered: bool | None = None
        try:
            if queue == "active" and not (marks.filter or marks.discard) \
                    and self.svc.deliver_first:
                delivered = await self.svc.deliver_first(envelope, text)  # decision 0047
            if not (delivered or marks.discard):  # discard: accepted and dropped
                tx.incoming = self.svc.store.create(queue_id)
                if tx.incoming.queue_id != queue_id:  # the id is taken (once in 2^19)
                    queue_id = envelope.queue_id = tx.incoming.queue_id
                await self.svc.commit(tx.incoming, envelope, text, queue)
        except Exception as exc:  # a queue failure must never look like acceptance
            self.queue_write_failed(queue_id, tx.incoming, queue, exc)
            self.reply(WRITE_ERROR)
            self.reset_transaction()
            self.count_result(verb, False)
            return
        tx.incoming = None
        self.error_count = 0  # forgiven before the reply, which is therefore never delayed
        self.junk_count = 0
        if verb == "bdat":  # Postfix reports the size of the client's text in CRLF form
            self.reply(f"250 2.0.0 Ok: {octets} bytes queued as {queue_id}")
        else:
            self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
        self.reset_transaction()  # the message is queued: nothing left to abort
        self.stats.count(verb, True)
        self.svc.metrics.message("discarded" if marks.discard else "held" if marks.hold
                                 else "filtered" if marks.filter else "accepted")
        if queue == "active" and not marks.discard and not delivered:
            self.svc.on_queued(queue_id, envelope, text,
                               any(r.done for r in envelope.recipients))
