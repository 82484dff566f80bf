"""Automatic blocks in a mail log: the `auto-block: blocked TARGET for Ns (offence K)` lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailgate.report.bounded import BoundedCounter

PREFIX = "warning: auto-block: blocked "
RESTRICTION = "auto_block"  # what the report calls the connections refused for a block


@dataclass
class BlockEvents:
    """Blocks placed, by target (an address, or a network with `/`), and the longest each got."""

    addresses: int = 0
    networks: int = 0
    targets: BoundedCounter[str] = field(default_factory=BoundedCounter)
    longest: dict[str, int] = field(default_factory=dict)  # target → seconds (top ones)

    def consume(self, text: str) -> bool:
        """Count one smtpd line (after `smtpd[pid]: `) if it places a block."""
        if not text.startswith(PREFIX):
            return False
        name, _, rest = text[len(PREFIX):].partition(" for ")
        seconds = rest.partition("s ")[0]
        if "/" in name:
            self.networks += 1
        else:
            self.addresses += 1
        self.targets.add(name)
        if seconds.isdigit() and int(seconds) > self.longest.get(name, 0):
            if len(self.longest) >= self.targets.cap:
                self.longest = {k: v for k, v in self.longest.items()
                                if k in self.targets.counts}
            self.longest[name] = int(seconds)
        return True

    def merge(self, later: BlockEvents) -> None:
        self.addresses += later.addresses
        self.networks += later.networks
        self.targets.merge(later.targets)
        for name, seconds in later.longest.items():
            self.longest[name] = max(seconds, self.longest.get(name, 0))

    def rows(self, top: int) -> list[tuple[str, int]]:
        """(`TARGET (longest Ns)`, blocks) for the most blocked targets."""
        return [(f"{name} (longest {self.longest.get(name, 0)}s)", n)
                for name, n in self.targets.top(top)]
