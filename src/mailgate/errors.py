"""The exception tree of mailgate, in one place.

    MailgateError
    ├── ConfigError          a main.cf or command-line setting is wrong (start-up stops)
    ├── MapError             a lookup table failed
    │   ├── MapTempError     try again later (→ 451 4.3.0 in the server)
    │   └── MapConfigError   the table cannot be used as configured (→ 451 4.3.5)
    └── QueueError           the queue could not store or read a message
"""

from __future__ import annotations


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """A configuration error: the message names the file, line, parameter and the problem."""


class MapError(MailgateError):
    """A lookup table failed; never means "not found" (that is a None result)."""


class MapTempError(MapError):
    """A temporary lookup failure (Postfix DICT_ERR_RETRY)."""


class MapConfigError(MapError):
    """A table that cannot be opened or parsed (Postfix DICT_ERR_CONFIG)."""


class QueueError(MailgateError):
    """The queue could not store or read a message."""
