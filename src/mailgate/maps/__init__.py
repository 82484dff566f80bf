"""Lookup tables behind one interface, opened by type:name (Postfix dict layer)."""

from __future__ import annotations

from collections.abc import Callable

from mailgate.maps import cidr, compiled, compose, redismap, regexp, simple
from mailgate.maps.base import FailedMap, Map, MapOptions, Registry

__all__ = ["FailedMap", "Map", "MapOptions", "Registry", "default_registry"]


def default_registry(options: MapOptions | None = None,
                     warn: Callable[[str], None] | None = None) -> Registry:
    """A registry with every built-in table type; tables open with `options` (MapOptions()
    if None) and report lookup-time warnings (non-UTF-8 keys) to `warn`."""
    registry = Registry(options=options or MapOptions())
    if warn is not None:
        registry.warn = warn
    simple.register(registry)
    cidr.register(registry)
    compiled.register(registry)
    compose.register(registry)
    regexp.register(registry)
    redismap.register(registry)
    return registry
