"""Per-session command counters and the `disconnect from ... commands=N/M` text (Postfix 3.0+)."""

from __future__ import annotations

ORDER = ("helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data",
         "bdat", "rset", "noop", "vrfy", "etrn", "quit", "unknown")


class CommandStats:
    __slots__ = ("ok", "total")

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.ok: dict[str, int] = {}

    def count(self, name: str, success: bool) -> None:
        self.total[name] = self.total.get(name, 0) + 1
        if success:
            self.ok[name] = self.ok.get(name, 0) + 1

    def summary(self) -> str:
        parts = []
        ok_all = total_all = 0
        for name in ORDER:
            total = self.total.get(name, 0)
            if not total:
                continue
            ok = self.ok.get(name, 0)
            ok_all += ok
            total_all += total
            parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        if total_all == 0 or ok_all != total_all:
            parts.append(f"commands={ok_all}/{total_all}")
        else:
            parts.append(f"commands={ok_all}")
        return " ".join(parts)
