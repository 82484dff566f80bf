"""The transaction journal (transaction_journal): one record per SMTP transaction, with what
the restriction engine saw and answered, for `mailgate replay` (docs/replay.md).

`NO_JOURNAL` is the journal when the parameter is empty: the session's engine is then the
plain one and nothing is recorded (decision 0067).
"""

from __future__ import annotations

from collections.abc import Callable

from mailgate.config.config import Config
from mailgate.journal.record import (
    NEED_HELO,
    TOO_MANY,
    Outcome,
    RecordError,
    Then,
    Transaction,
    decode,
    encode,
)
from mailgate.journal.recorder import NO_JOURNAL, Journal, TransactionJournal
from mailgate.journal.writer import JournalFile, create

__all__ = [
    "NEED_HELO",
    "NO_JOURNAL",
    "TOO_MANY",
    "Journal",
    "JournalFile",
    "Outcome",
    "RecordError",
    "Then",
    "Transaction",
    "TransactionJournal",
    "create",
    "decode",
    "encode",
    "open_journal",
]


def open_journal(cfg: Config, warn: Callable[[str], None]) -> Journal:
    """The journal main.cf asks for (NO_JOURNAL when transaction_journal is empty)."""
    path = cfg.get_str("transaction_journal")
    if not path:
        return NO_JOURNAL
    return TransactionJournal(JournalFile(path, cfg.get_size("transaction_journal_size_limit"),
                                          warn))
