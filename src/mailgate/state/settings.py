"""Where client state lives: the local SQLite file or Redis (single, Sentinel, Cluster), from main.cf."""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config.config import Config
from mailgate.errors import ConfigError

ACTIONS = ("fail_open", "tempfail", "local")


@dataclass(frozen=True, slots=True)
class StateSettings:
    """`redis_*` parameters (ours, decision 0066); no Redis named: the local database."""

    database: str  # state_database: the local SQLite file
    servers: tuple[tuple[str, int], ...]  # redis_servers (the seeds with redis_cluster)
    sentinels: tuple[tuple[str, int], ...]
    sentinel_master: str
    cluster: bool
    password: str | None  # read from redis_password_file
    username: str | None
    tls: bool
    timeout: float
    key_prefix: str
    failure_action: str

    @property
    def redis(self) -> bool:
        return bool(self.servers or self.sentinels)

    @classmethod
    def from_config(cls, cfg: Config) -> StateSettings:
        action = cfg.get_str("redis_failure_action")
        if action not in ACTIONS:
            raise ConfigError(f"{cfg.origin('redis_failure_action')}: redis_failure_action: "
                              f"expected one of {', '.join(ACTIONS)}, not {action!r}")
        sentinels = _addresses(cfg, "redis_sentinels", 26379)
        if sentinels and not cfg.get_str("redis_sentinel_master"):
            raise ConfigError(f"{cfg.origin('redis_sentinels')}: redis_sentinels needs "
                              "redis_sentinel_master")
        cluster = cfg.get_bool("redis_cluster")
        servers = _addresses(cfg, "redis_servers", 6379)
        if cluster and not servers:
            raise ConfigError(f"{cfg.origin('redis_cluster')}: redis_cluster = yes needs "
                              "redis_servers (the seed nodes)")
        password = None
        if (path := cfg.get_str("redis_password_file")):
            try:
                with open(path, encoding="utf-8") as f:
                    password = f.read().strip()
            except OSError as exc:
                raise ConfigError(f"{cfg.origin('redis_password_file')}: open {path}: "
                                  f"{exc.strerror}") from exc
        return cls(cfg.get_str("state_database"), servers, sentinels,
                   cfg.get_str("redis_sentinel_master"), cluster, password,
                   cfg.get_str("redis_username") or None, cfg.get_bool("redis_tls"),
                   cfg.get_time("redis_timeout"), cfg.get_str("redis_key_prefix"), action)


def _addresses(cfg: Config, name: str, port: int) -> tuple[tuple[str, int], ...]:
    out = []
    for item in cfg.get_list(name):
        host, sep, number = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not sep:
            host, number = item, str(port)
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not number.isdigit() or not 0 < int(number) < 65536:
            raise ConfigError(f"{cfg.origin(name)}: {name}: bad address: {item}")
        out.append((host, int(number)))
    return tuple(out)
