"""The auto_block_* parameters, read once from main.cf (with a service's -o settings)."""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config.config import Config


@dataclass(frozen=True, slots=True)
class BlockSettings:
    """auto_block_* (ours; docs/blocks.md has the defaults and why)."""

    threshold: int  # bad events in a window that block; 0: off
    window: float  # seconds a count runs (a fixed window from its first event)
    time: float  # the first block
    max_time: float  # the longest block (repeat offenders double up to it)
    ipv4_prefix: int
    ipv6_prefix: int
    exceptions: tuple[str, ...]  # a host/address match list (never counted or blocked)

    @classmethod
    def from_config(cls, cfg: Config, mynetworks: tuple[str, ...] = ()) -> BlockSettings:
        """`mynetworks`: the list mynetworks_style derives when mynetworks is unset (what
        the default `$mynetworks` means then)."""
        name = "auto_block_exceptions"
        exceptions = cfg.get_list(name) if cfg.is_set(name) or cfg.is_set("mynetworks") \
            else mynetworks
        return cls(cfg.get_int("auto_block_threshold"), cfg.get_time("auto_block_window"),
                   cfg.get_time("auto_block_time"), cfg.get_time("auto_block_max_time"),
                   cfg.get_int("auto_block_ipv4_prefix_length"),
                   cfg.get_int("auto_block_ipv6_prefix_length"), exceptions)

    @property
    def enabled(self) -> bool:
        return self.threshold > 0
