"""`mailgate block list|add|delete`: the automatic blocks in the state store, read and changed by hand."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from mailgate.autoblock.listing import blocks_in_force
from mailgate.autoblock.records import BLOCK, EVENTS, MANUAL, OFFENCES, Block, target
from mailgate.autoblock.settings import BlockSettings
from mailgate.config.config import Config
from mailgate.privileges import drop, hand_over, mail_owner
from mailgate.state import StateUnavailable, Store
from mailgate.state.open import open_store
from mailgate.state.settings import StateSettings

Action = Callable[[Store, str, float, TextIO], Awaitable[int]]


def open_as_owner(cfg: Config) -> Store:
    """The server's state store. Started as root, the command becomes mail_owner first (the
    workers run as mail_owner and must keep writing the database files it touches); the
    state directory is made and handed over when the server never ran."""
    settings = StateSettings.from_config(cfg)
    owner = mail_owner(cfg)
    if owner is not None and not settings.redis:
        directory = Path(settings.database).parent
        directory.mkdir(parents=True, exist_ok=True)
        hand_over([directory], owner)
    store = open_store(settings, warn=lambda text: None)  # (opens its files on first use)
    drop(owner)
    return store


def run(cfg: Config, action: str, what: str | None, seconds: str | None, as_json: bool,
        out: TextIO, err: TextIO) -> int:
    """`mailgate block list` (`--json`: one object a line), `add TARGET [-t TIME]` (default
    auto_block_time), `delete TARGET`. TARGET is an address or an auto_block_*_prefix_length
    network. Exit 0, 1 (nothing to delete, state unavailable) or 2 (usage)."""
    s = BlockSettings.from_config(cfg)
    key = ""
    if action != "list":
        if not what:
            print(f"mailgate block: {action} needs an ADDRESS or NETWORK", file=err)
            return 2
        try:
            key = target(what, s.ipv4_prefix, s.ipv6_prefix)
        except ValueError as exc:
            print(f"mailgate block: {exc}", file=err)
            return 2
    length = s.time
    if seconds is not None:
        length = cfg.with_overrides([("auto_block_time", seconds)], "-t").get_time(
            "auto_block_time")
    if action == "add" and not s.enabled:
        print("mailgate block: warning: auto_block_threshold = 0: the server looks no block "
              "up until it is set", file=err)
    store = open_as_owner(cfg)
    chosen: Action = {"list": _list_json if as_json else _list, "add": _add,
                      "delete": _delete}[action]

    async def main() -> int:
        try:
            return await chosen(store, key, length, out)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except StateUnavailable as exc:
        print(f"mailgate block: state unavailable: {exc}", file=err)
        return 1


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


async def _list(store: Store, key: str, length: float, out: TextIO) -> int:
    now = time.time()
    for block, expires in await blocks_in_force(store):
        print(f"{block.target} blocked until {_when(expires)} ({max(expires - now, 0):.0f}s "
              f"left), offence {block.offence}, {block.source}: {block.reason}", file=out)
    return 0


async def _list_json(store: Store, key: str, length: float, out: TextIO) -> int:
    for block, expires in await blocks_in_force(store):
        print(json.dumps({"target": block.target, "until": round(expires, 3),
                          "offence": block.offence, "source": block.source,
                          "reason": block.reason}), file=out)
    return 0


async def _add(store: Store, key: str, length: float, out: TextIO) -> int:
    until = time.time() + length
    block = Block(key, until, 0, MANUAL, "added with mailgate block add")
    await store.put(BLOCK + key, block.value(), length)
    print(f"mailgate block: {key} blocked until {_when(until)}", file=out)
    return 0


async def _delete(store: Store, key: str, length: float, out: TextIO) -> int:
    """Lift the block and forget the target's count and past offences (a mistake's)."""
    found = await store.delete(BLOCK + key)
    await store.delete(EVENTS + key)
    await store.delete(OFFENCES + key)
    print(f"mailgate block: {key} {'unblocked' if found else 'was not blocked'}", file=out)
    return 0 if found else 1
