"""The blocks in force in a state store, as `mailgate block list` and `mailgate report` show them."""

from __future__ import annotations

from mailgate.autoblock.records import BLOCK, Block
from mailgate.state import Store


async def blocks_in_force(store: Store) -> list[tuple[Block, float]]:
    """Every live block with its expiry, in key order."""
    out = []
    for item in await store.items(BLOCK):
        name = item.key[len(BLOCK):]
        block = Block.parse(name, item.value) or Block(name, item.expires, 0, "?", item.value)
        out.append((block, item.expires))
    return out
