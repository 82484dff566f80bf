"""Lookup tables behind one interface, opened by type:name (Postfix dict layer)."""

from __future__ import annotations

from mailgate.maps import cidr, compiled, compose, regexp, simple
from mailgate.maps.base import FailedMap, Map, MapOptions, Registry

__all__ = ["FailedMap", "Map", "MapOptions", "Registry", "default_registry"]


def default_registry() -> Registry:
    """A registry with every built-in table type."""
    registry = Registry()
    simple.register(registry)
    cidr.register(registry)
    compiled.register(registry)
    compose.register(registry)
    regexp.register(registry)
    return registry
