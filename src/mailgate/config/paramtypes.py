"""What a main.cf parameter is: its kind (how its text converts) and its declaration."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """How a parameter's expanded text is converted (Postfix's mail_conf_{str,int,bool,time,...})."""

    STR = "str"
    INT = "int"
    BOOL = "bool"
    TIME = "time"  # a number with an optional unit s/m/h/d/w; the default unit is per parameter
    SIZE = "size"  # a byte count (Postfix's long)
    LIST = "list"  # commas and/or whitespace separated, {} protects an element


@dataclass(frozen=True, slots=True)
class Param:
    """One main.cf parameter: its Postfix name, type, built-in default (unexpanded) and bounds."""

    name: str
    kind: Kind
    default: str
    min: int | None = None
    max: int | None = None
    unit: str = "s"  # default time unit (Postfix: the default's suffix decides)
    extension: bool = False  # a mailgate parameter that Postfix does not have

