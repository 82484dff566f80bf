"""postscreen_access_list: the permanent allow and deny list (postscreen_access.c)."""

from __future__ import annotations

import enum
from collections.abc import Callable

from mailgate.errors import MapError
from mailgate.maps import Map, Registry
from mailgate.maps.matchlist import HostAddrList


class Verdict(enum.Enum):
    ALLOW = "permit"  # PSC_ACL_ACT_ALLOWLIST
    DENY = "reject"  # PSC_ACL_ACT_DENYLIST
    DUNNO = "dunno"
    ERROR = "error"


_SEPARATORS = ", \t\r"


def _words(text: str) -> list[str]:
    """mystrtok(..., ", \\t\\r")."""
    for sep in _SEPARATORS[1:]:
        text = text.replace(sep, _SEPARATORS[0])
    return [word for word in text.split(_SEPARATORS[0]) if word]


class AccessList:
    """`permit`, `reject`, `dunno`, `permit_mynetworks` and `type:table` (whose result is one
    such list, without tables), first decision wins; matched on the client address."""

    def __init__(self, items: tuple[str, ...], registry: Registry, mynetworks: HostAddrList,
                 warn: Callable[[str], None]) -> None:
        self.items = tuple(word for item in items for word in _words(item))
        self.mynetworks = mynetworks
        self.warn = warn
        self.tables: dict[str, Map] = {name: registry.open_or_failed(name)
                                       for name in self.items if ":" in name}

    def evaluate(self, addr: str) -> Verdict:
        """psc_acl_eval() for postscreen_access_list."""
        return self._evaluate(self.items, addr, "postscreen_access_list")

    def _evaluate(self, items: tuple[str, ...], addr: str, origin: str) -> Verdict:
        for name in items:
            word = name.lower()
            if word == "reject":
                return Verdict.DENY
            if word == "permit":
                return Verdict.ALLOW
            if word == "permit_mynetworks":
                if self._mynetworks(addr):
                    return Verdict.ALLOW
            elif ":" in name:
                if origin != "postscreen_access_list":  # no tables inside a table's result
                    self.warn(f'table {origin}: lookup result "{name}" is not allowed -- '
                              "ignoring remainder of access list")
                    return Verdict.DUNNO
                try:
                    value = self.tables[name].lookup(addr)
                except MapError:
                    self.warn(f"{name}: table lookup error -- ignoring the remainder of this "
                              "access list")
                    return Verdict.ERROR
                if value is not None:
                    verdict = self._evaluate(tuple(_words(value)), addr, name)
                    if verdict is not Verdict.DUNNO:
                        return verdict
            elif word == "dunno":
                return Verdict.DUNNO
            else:
                self.warn(f"{origin}: unknown command: {name} -- ignoring the remainder of "
                          "this access list")
                return Verdict.ERROR
        return Verdict.DUNNO

    def _mynetworks(self, addr: str) -> bool:
        try:
            return self.mynetworks.match("", addr)
        except MapError:
            return False
