"""Parameter values that defeat their purpose: error limits under which the tarpit never
delays anyone, and `#` comments that became part of a value."""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailgate.config.config import Config
from mailgate.lint.findings import Finding, parse_origin
from mailgate.lint.lists import Subject

_COMMENT = re.compile(r"\s#")


def check_tarpit(subject: Subject) -> Iterator[Finding]:
    """tarpit-never: smtpd_error_sleep_time delays the replies of a client with at least
    smtpd_soft_error_limit errors, and smtpd_hard_error_limit errors end the session, so a
    hard limit at or below the soft one (or a zero delay) means nobody is ever slowed down.
    Evaluated without `stress` (Postfix's own overload setting lowers the hard limit to 1)."""
    cfg = subject.cfg
    soft, hard = cfg.get_int("smtpd_soft_error_limit"), cfg.get_int("smtpd_hard_error_limit")
    if hard <= soft:
        name = "smtpd_hard_error_limit" if cfg.is_set("smtpd_hard_error_limit") else \
            "smtpd_soft_error_limit"
        yield Finding(subject.where(name), "tarpit-never",
                      f"smtpd_hard_error_limit = {hard} is not above smtpd_soft_error_limit = "
                      f"{soft}: a session ends at {hard} errors before any reply is delayed, so "
                      "the tarpit never slows a client down",
                      f"keep the hard limit above the soft one, e.g. smtpd_soft_error_limit = "
                      f"{min(soft, 10)} and smtpd_hard_error_limit = {max(min(soft, 10) * 2, 20)}")
    elif cfg.get_time("smtpd_error_sleep_time") == 0 and \
            cfg.get_time("smtpd_error_sleep_growth") == 0:
        yield Finding(subject.where("smtpd_error_sleep_time"), "tarpit-never",
                      "smtpd_error_sleep_time = 0 (and no smtpd_error_sleep_growth): a client "
                      "past smtpd_soft_error_limit is not slowed down at all",
                      "smtpd_error_sleep_time = 1s (Postfix's default)")


def check_comments(cfg: Config, main_cf: str) -> Iterator[Finding]:
    """comment-in-value: in main.cf `#` starts a comment only at the start of a line; after
    a value it is part of the value (postconf(5))."""
    for name, entry in cfg.explicit.items():
        m = _COMMENT.search(entry.value)
        if m is not None:
            yield Finding(parse_origin(entry.origin, main_cf), "comment-in-value",
                          f'"{entry.value[m.end() - 1:]}" is part of the value of {name}: '
                          "main.cf has comments only on lines of their own",
                          "put the comment on a line of its own, starting with #")
