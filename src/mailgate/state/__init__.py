"""Client state that outlives a session: one async key-value interface, several backends.

Greylisting triplets, automatic blocks and their event counts, the postscreen cache and rate
counters are keys with a lifetime. `Store` is what the features see; `LocalStore` keeps them
in one SQLite file that every worker process of this machine shares, `MemoryStore` in a
dict (one process: tests, `mailgate check`). A backend that cannot answer raises
StateUnavailable: a temporary failure, never "not found" (decision 0061).
"""

from __future__ import annotations

from mailgate.state.local import LocalStore
from mailgate.state.memory import MemoryStore
from mailgate.state.store import Change, Item, StateUnavailable, Store

__all__ = ["Change", "Item", "LocalStore", "MemoryStore", "StateUnavailable", "Store"]
