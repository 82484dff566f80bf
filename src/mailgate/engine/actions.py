"""Results of restrictions: a frozen Action (verdict, code, enhanced status code, text)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    DUNNO = "dunno"  # no decision: next restriction
    OK = "ok"  # permit for this list
    REJECT = "reject"  # 4xx or 5xx reply: stop evaluation


@dataclass(frozen=True, slots=True)
class Action:
    verdict: Verdict
    code: int = 0
    dsn: str = ""
    text: str = ""

    @property
    def reply(self) -> str:
        return f"{self.code} {self.dsn} {self.text}"


DUNNO = Action(Verdict.DUNNO)
OK = Action(Verdict.OK)


def fix_dsn_class(code: int, dsn: str) -> str:
    """The DSN class digit follows the reply code (`550 4.7.0` → `5.7.0`)."""
    first = str(code)[0]
    return first + dsn[1:] if dsn and dsn[0] != first else dsn


def reject(code: int, dsn: str, text: str, soft_bounce: bool = False) -> Action:
    """A reject Action with Postfix's adjustments: DSN class from code, soft_bounce 5→4."""
    if soft_bounce and code // 100 == 5:
        code -= 100
    return Action(Verdict.REJECT, code, fix_dsn_class(code, dsn), text)
