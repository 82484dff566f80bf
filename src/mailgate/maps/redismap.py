"""redis: tables: each lookup is a GET in Redis, set up by a Postfix-style file (like mysql:)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailgate.errors import MapConfigError, MapTempError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.casefold import fold

_SETTINGS = {"hosts": "127.0.0.1:6379", "key_format": "%s", "password_file": "",
             "username": "", "db": "0", "timeout": "0.05s", "tls": "no"}


def read_settings(path: str) -> dict[str, str]:
    """`name = value` lines (`#` comments), as Postfix reads a mysql: or ldap: file; an
    unknown name or a line without `=` is a MapConfigError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise MapConfigError(f"open {path}: {exc.strerror}") from exc
    values = dict(_SETTINGS)
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, eq, value = text.partition("=")
        name = name.strip()
        if not eq or name not in _SETTINGS:
            raise MapConfigError(f"{path}, line {number}: expected one of "
                                 f"{', '.join(_SETTINGS)} = value: {text}")
        values[name] = value.strip()
    return values


def _seconds(text: str, path: str) -> float:
    number = text[:-1] if text.endswith("s") else text
    try:
        return float(number)
    except ValueError:
        raise MapConfigError(f"{path}: bad timeout: {text}") from None


def _client(values: dict[str, str], path: str) -> Any:
    import redis

    host, _, port = values["hosts"].split()[0].rpartition(":")
    if not host or not port.isdigit() or not values["db"].isdigit():
        raise MapConfigError(f"{path}: bad hosts or db: {values['hosts']} {values['db']}")
    password = None
    if values["password_file"]:
        try:
            with open(values["password_file"], encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            raise MapConfigError(f"{path}: open {values['password_file']}: {exc.strerror}"
                                 ) from exc
    timeout = _seconds(values["timeout"], path)
    return redis.Redis(host=host.strip("[]"), port=int(port), db=int(values["db"]),
                       password=password, username=values["username"] or None,
                       ssl=values["tls"].lower() in ("yes", "true"), socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True)


@dataclass
class RedisMap:
    """A fixed-key table in Redis: the key (folded unless `fold_case` is off) put into
    `key_format` at `%s` is read with GET. A Redis error or timeout is a temporary lookup
    failure (451 4.3.5), never "not found". Lookups are synchronous, as every table's,
    bounded by the file's `timeout` (50 ms by default)."""

    spec: str
    client: Any
    key_format: str
    fold_case: bool = True
    utf8: bool = True
    fixed: bool = True

    def lookup(self, key: str) -> str | None:
        from redis.exceptions import RedisError

        name = self.key_format.replace("%s", fold(key, self.utf8) if self.fold_case else key)
        try:
            value = self.client.get(name)
        except (RedisError, OSError) as exc:
            raise MapTempError(f"{self.spec}: {exc}") from exc
        return None if value is None else str(value)


def open_redis(name: str, options: MapOptions) -> RedisMap:
    values = read_settings(name)
    if "%s" not in values["key_format"]:
        raise MapConfigError(f"{name}: key_format must contain %s")
    return RedisMap(f"redis:{name}", _client(values, name), values["key_format"],
                    options.fold_case, options.utf8)


def register(registry: Registry) -> None:
    registry.register("redis", open_redis)
