"""What the shared state holds now, added to a report: the blocks in force on every gateway."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime

from mailgate.autoblock.listing import blocks_in_force
from mailgate.config.config import Config
from mailgate.state import StateUnavailable
from mailgate.state.redisstore import RedisStore, redis_client
from mailgate.state.settings import StateSettings

TIMEOUT = 5.0  # seconds per Redis operation: an administrator waits, a session would not


def where(settings: StateSettings) -> str:
    if settings.sentinels:
        return f"redis sentinel master {settings.sentinel_master}"
    servers = " ".join(f"{host}:{port}" for host, port in settings.servers)
    return f"redis cluster {servers}" if settings.cluster else f"redis {servers}"


def render(cfg: Config, top: int, now: float | None = None) -> str:
    """The text section for the configuration's shared state (Redis), or "" when the state
    is this machine's alone (`mailgate block list` reads that one, as mail_owner)."""
    settings = StateSettings.from_config(cfg)
    if not settings.redis:
        return ""
    settings = dataclasses.replace(settings, timeout=max(settings.timeout, TIMEOUT))
    title = f"Blocks in force now ({where(settings)})"
    out = ["", title, "-" * len(title)]

    async def read() -> list[str]:
        store = RedisStore(redis_client(settings), settings.key_prefix)
        try:
            blocks = await blocks_in_force(store)
        finally:
            await store.aclose()
        moment = time.time() if now is None else now
        networks = sum("/" in block.target for block, _ in blocks)
        rows = [f"  {len(blocks)} blocks ({len(blocks) - networks} addresses, "
                f"{networks} networks)"]
        for block, expires in sorted(blocks, key=lambda b: -b[1])[:top]:
            until = datetime.fromtimestamp(expires).strftime("%Y-%m-%d %H:%M:%S")
            rows.append(f"  {block.target:<20} until {until} ({max(expires - moment, 0):.0f}s"
                        f" left), offence {block.offence}, {block.source}: {block.reason}")
        return rows

    try:
        out += asyncio.run(read())
    except StateUnavailable as exc:
        out.append(f"  unavailable: {exc}")
    return "\n".join(out) + "\n"
