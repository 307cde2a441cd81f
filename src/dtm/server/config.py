"""Server configuration with upstream's key names: YAML file, then environment, then flags.

Upstream reads `Store.Driver` from YAML and `STORE_DRIVER` from the environment (the key
path joined by underscores, camel case split: `TransCronInterval` -> `TRANS_CRON_INTERVAL`).
The same names work here, so an upstream `conf.yml` or deployment environment carries over.
Precedence: defaults < YAML file < environment < command-line flags.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where transactions are kept; the keys are upstream's `Store` section plus `Path`."""

    Driver: str = "sqlite"
    Path: str = "dtm.db"
    Host: str = ""
    Port: int = 0
    User: str = ""
    Password: str = ""
    Db: str = "dtm"
    Schema: str = "public"
    MaxOpenConns: int = 500
    MaxIdleConns: int = 500
    ConnMaxLifeTime: int = 5
    DataExpire: int = 604800
    FinishedDataExpire: int = 86400
    RedisPrefix: str = "{a}"
    RedisBuckets: int = 1
    Synchronous: str = "FULL"
    AutoMigrate: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    """Every server setting. Times are seconds; defaults equal upstream's.

    Additions of this implementation: `Store.Path`, `Store.Synchronous` (SQLite),
    `Store.AutoMigrate` (create missing tables at start), `HttpHost`, `MaxRetryInterval` (cap of the
    exponential back-off; upstream doubles without bound), `RetryJitter` (fraction of
    random spread added to each back-off), `LogFormat` (text or json),
    `PurgeInterval` (seconds between purges of finished transactions older than
    `Store.FinishedDataExpire`, on every store; 0 retention keeps them forever),
    `Store.RedisBuckets` (Redis: hash slots transactions are spread over, for a Redis
    Cluster given as `Store.Host: "host1:port1,host2:port2"`; 1, the default, keeps every
    key in the one slot of `RedisPrefix`, as upstream; never change it while transactions
    are stored).
    """

    Store: StoreConfig = field(default_factory=StoreConfig)
    TransCronInterval: float = 3
    TimeoutToFail: int = 35
    RetryInterval: int = 10
    RequestTimeout: float = 3
    HttpHost: str = "0.0.0.0"
    HttpPort: int = 36789
    GrpcPort: int = 36790
    JsonRpcPort: int = 36791
    UpdateBranchSync: int = 1
    LogLevel: str = "info"
    LogFormat: str = "text"
    ConfigUpdateInterval: int = 3
    AlertRetryLimit: int = 3
    AlertWebHook: str = ""
    AdminBasePath: str = ""
    MaxRetryInterval: int = 3600
    RetryJitter: float = 0.0
    PurgeInterval: float = 60


# Upstream keys that configure parts this server does not have (service discovery, log
# rotation); an upstream conf.yml that sets them still loads.
UPSTREAM_ONLY_KEYS = frozenset(
    {
        "MicroService",
        "HttpMicroService",
        "Log",
        "TimeZoneOffset",
        "GrpcServiceConfig",
        "GrpcBalancer",
        "UpdateBranchAsyncGoroutineNum",
    }
)

_DRIVERS = {"sqlite", "boltdb", "mysql", "postgres", "redis"}
_LOG_LEVELS = {"debug", "info", "warn", "warning", "error"}


def env_name(path: str) -> str:
    """`Store.MaxOpenConns` -> `STORE_MAX_OPEN_CONNS`, upstream's naming rule."""
    key = path.replace(".", "_")
    key = re.sub(r"([A-Z])([A-Z][a-z])", r"\1_\2", key)
    key = re.sub(r"([a-z])([A-Z]+)", r"\1_\2", key)
    return key.upper()


def _coerce(value: Any, to: type, path: str) -> Any:
    try:
        if to is bool:
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if to is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if to is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: expected {to.__name__}, got {value!r}") from None


def _build(
    cls: type,
    prefix: str,
    yaml_section: Mapping[str, Any],
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> Any:
    values: dict[str, Any] = {}
    known = {f.name for f in fields(cls)}
    for name in yaml_section:
        if name not in known and not (prefix == "" and name in UPSTREAM_ONLY_KEYS):
            raise ConfigError(f"unknown configuration key {prefix}{name}")
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        ftype = {"str": str, "int": int, "float": float, "bool": bool}.get(str(f.type))
        if ftype is None:  # a nested section
            section = yaml_section.get(f.name) or {}
            if not isinstance(section, Mapping):
                raise ConfigError(f"{path}: expected a mapping")
            sub_cls = StoreConfig
            values[f.name] = _build(sub_cls, f"{path}.", section, env, overrides)
            continue
        if path in overrides and overrides[path] is not None:
            values[f.name] = _coerce(overrides[path], ftype, path)
        elif env.get(env_name(path), "") != "":
            values[f.name] = _coerce(env[env_name(path)], ftype, env_name(path))
        elif f.name in yaml_section and yaml_section[f.name] is not None:
            values[f.name] = _coerce(yaml_section[f.name], ftype, path)
    return cls(**values)


def validate(conf: Config) -> None:
    """Reject values upstream would reject, plus ones that cannot work at all."""
    if conf.Store.Driver not in _DRIVERS:
        raise ConfigError(
            f"Store.Driver: unknown driver {conf.Store.Driver!r}, "
            f"expected one of {sorted(_DRIVERS)}"
        )
    if conf.RetryInterval < 1:
        raise ConfigError("RetryInterval should be at least 1 second")
    if conf.TimeoutToFail < conf.RetryInterval:
        raise ConfigError("TimeoutToFail should not be less than RetryInterval")
    if conf.TransCronInterval <= 0:
        raise ConfigError("TransCronInterval should be positive")
    if conf.RequestTimeout <= 0:
        raise ConfigError("RequestTimeout should be positive")
    if conf.MaxRetryInterval < conf.RetryInterval:
        raise ConfigError("MaxRetryInterval should not be less than RetryInterval")
    if conf.PurgeInterval <= 0:
        raise ConfigError("PurgeInterval should be positive")
    if conf.Store.RedisBuckets < 1:
        raise ConfigError("Store.RedisBuckets should be at least 1")
    if conf.Store.FinishedDataExpire < 0:
        raise ConfigError("Store.FinishedDataExpire should not be negative")
    if not 0 <= conf.RetryJitter <= 1:
        raise ConfigError("RetryJitter should be between 0 and 1")
    for name in ("HttpPort", "GrpcPort", "JsonRpcPort"):
        if not 0 <= getattr(conf, name) <= 65535:
            raise ConfigError(f"{name} should be a port number")
    if conf.LogLevel.lower() not in _LOG_LEVELS:
        raise ConfigError(f"LogLevel: expected one of {sorted(_LOG_LEVELS)}")
    if conf.LogFormat not in {"text", "json"}:
        raise ConfigError("LogFormat: expected text or json")
    if conf.Store.Synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ConfigError("Store.Synchronous: expected OFF, NORMAL, FULL or EXTRA")
    if conf.Store.Driver in {"mysql", "postgres", "redis"}:
        if not conf.Store.Host:
            raise ConfigError("Store.Host is required for driver " + conf.Store.Driver)
        if not conf.Store.Port:
            raise ConfigError("Store.Port is required for driver " + conf.Store.Driver)


def load(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read and validate the configuration; raises ConfigError with the offending key."""
    data: Any = {}
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} should hold a mapping of keys")
    conf: Config = _build(Config, "", data, os.environ if env is None else env, overrides or {})
    validate(conf)
    return conf


def replace(conf: Config, **changes: Any) -> Config:
    """A copy with some top-level settings changed (tests and the CLI use it)."""
    return dataclasses.replace(conf, **changes)
