"""Automatic blocks (auto_block_*): clients and networks with too many bad events are refused
at connect for a while (decision 0064, docs/blocks.md).

The session reports every reply (`Blocks.replied`) and asks at connect (`Blocks.refusal`);
`NO_BLOCKS` answers when the feature is off. The state lives in the shared store
(mailgate.state) under the keys of `records`, which `mailgate block` reads and writes.
"""

from __future__ import annotations

from mailgate.autoblock.events import EVENTS, classify
from mailgate.autoblock.records import Block
from mailgate.autoblock.settings import BlockSettings
from mailgate.autoblock.tracker import NO_BLOCKS, REFUSAL, AutoBlocks, Blocks

__all__ = ["EVENTS", "NO_BLOCKS", "REFUSAL", "AutoBlocks", "Block", "BlockSettings", "Blocks",
           "classify"]
