"""Opens the state backend main.cf names: Redis behind a GuardedStore, or the local SQLite file."""

from __future__ import annotations

import time
from collections.abc import Callable

from mailgate.state.guard import GuardedStore
from mailgate.state.local import LocalStore
from mailgate.state.redisstore import RedisStore, redis_client
from mailgate.state.settings import StateSettings
from mailgate.state.store import Store


def open_store(settings: StateSettings, warn: Callable[[str], None],
               clock: Callable[[], float] = time.time,
               observe: Callable[[bool], None] = lambda up: None) -> Store:
    """The store for these settings. With Redis, `redis_failure_action = local` falls back
    to the local database (this machine's counts only) while Redis is away."""
    local = LocalStore(settings.database, clock)
    if not settings.redis:
        return local
    remote = RedisStore(redis_client(settings), settings.key_prefix, clock)
    return GuardedStore(remote, settings.failure_action, local, settings.timeout, warn,
                        observe=observe)
