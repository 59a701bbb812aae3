"""Settings, read from the environment (then `.env` in the working directory) when asked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from decouple import AutoConfig

from persistence.errors import ConfigurationError

__all__ = ["DatabaseUrlOrigin", "Settings", "load_settings"]

DatabaseUrlOrigin = Literal[
    "environment", "file", "unset", "empty in the environment", "empty in the file", "given"
]
"""Where `Settings.database_url` came from. A variable set in the environment wins over
`.env` even when it is empty, and an empty (or blank) `DATABASE_URL` counts as unset."""


@dataclass(frozen=True)
class Settings:
    """Every setting the package reads; `.env.example` lists them with samples."""

    database_url: str | None
    """`DATABASE_URL`; `None` means: start the embedded PostgreSQL."""
    pool_size: int = 5
    max_overflow: int = 15
    pool_timeout: float = 30.0
    """Seconds to wait for a free pooled connection before `PoolTimeoutError`."""
    pool_recycle: int = 240
    """Seconds after which a pooled connection is replaced; below Neon's 5-minute suspend."""
    connect_timeout: int = 10
    """Seconds to wait for a new connection: long enough for a suspended Neon compute to wake."""
    embedded_dir: Path = Path(".persistence/pgdata")
    """Where the embedded PostgreSQL keeps its data (relative to the working directory)."""
    test_database_url: str | None = None
    """`TEST_DATABASE_URL`: the server the test plugin makes its throwaway database on."""
    pool_idle_timeout: float = 60.0
    """Seconds a connection beyond `pool_size` may stay idle before it is closed."""
    read_urls: tuple[str, ...] = ()
    """`DATABASE_READ_URL`: read replicas (comma-separated) for read-only units of work."""
    read_max_lag: float = 5.0
    """Seconds behind the primary past which a replica is skipped for reads."""
    timeout: float | None = None
    """Default deadline of a unit of work, in seconds (`None`: none)."""
    idle_in_transaction_timeout: float | None = 60.0
    """Seconds a transaction may sit idle before the server ends it (`None`: unbounded)."""
    database_url_origin: DatabaseUrlOrigin = "given"
    """Where `database_url` came from ("given": passed to `Settings` directly)."""
    database_url_in_file: bool = False
    """Whether `.env` sets a non-empty `DATABASE_URL` (ignored if the environment has one)."""

    def __repr__(self) -> str:
        # The URL carries the password: never print it.
        origin = self.database_url_origin
        if self.database_url:
            shown = f"set ({origin})"
        else:
            shown = f"{'unset' if origin in ('unset', 'given') else origin}: embedded PostgreSQL"
        test = "set" if self.test_database_url else "unset"
        return (
            f"Settings(database_url=<{shown}>, pool_size={self.pool_size}, "
            f"max_overflow={self.max_overflow}, pool_timeout={self.pool_timeout}, "
            f"pool_recycle={self.pool_recycle}, connect_timeout={self.connect_timeout}, "
            f"embedded_dir={str(self.embedded_dir)!r}, test_database_url=<{test}>, "
            f"pool_idle_timeout={self.pool_idle_timeout}, read_urls=<{len(self.read_urls)}>, "
            f"read_max_lag={self.read_max_lag}, timeout={self.timeout}, "
            f"idle_in_transaction_timeout={self.idle_in_transaction_timeout})"
        )


def _reader(search_path: Path | None) -> AutoConfig:
    # The bare `decouple.config` looks for `.env` beside the calling module, which is inside
    # site-packages once installed: search from the working directory instead.
    return AutoConfig(search_path=str(search_path or Path.cwd()))


def _number(read: AutoConfig, name: str, default: float, low: float, *, whole: bool) -> float:
    raw = str(read(name, default=str(default))).strip()
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(f"{name} must be {kind}, got {raw!r}") from None
    if value < low:
        raise ConfigurationError(f"{name} must be at least {low}, got {value}")
    return value


def _seconds_or_none(read: AutoConfig, name: str, default: float | None) -> float | None:
    raw = str(read(name, default="" if default is None else str(default))).strip()
    if raw in {"", "0", "none", "None", "off"}:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name} must be a number of seconds (or 0 / empty for none), got {raw!r}"
        ) from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value}")
    return value


def _read_urls(read: AutoConfig) -> tuple[str, ...]:
    raw = str(read("DATABASE_READ_URL", default=""))
    return tuple(url.strip() for url in raw.split(",") if url.strip())


def _in_file(read: AutoConfig, name: str) -> str | None:
    # What the settings file alone says (decouple's `in` also looks at the environment);
    # `None` when it does not set `name`. `read.config` exists once `read` was called.
    try:
        value = read.config.repository[name]
    except KeyError:
        return None
    return None if value is None else str(value).strip()


def _origin(url: str | None, in_file: str | None) -> DatabaseUrlOrigin:
    if "DATABASE_URL" in os.environ:
        return "environment" if url else "empty in the environment"
    if in_file is None:
        return "unset"
    return "file" if in_file else "empty in the file"


def load_settings(search_path: Path | None = None) -> Settings:
    """Read the settings now (environment first, then `.env` in `search_path` or the cwd).

    A variable set in the environment wins even when empty; an empty `DATABASE_URL` counts
    as unset (the embedded PostgreSQL). Raises `ConfigurationError` naming the setting when
    a value is malformed.
    """
    read = _reader(search_path)
    url = str(read("DATABASE_URL", default="")).strip() or None
    in_file = _in_file(read, "DATABASE_URL")
    test_url = str(read("TEST_DATABASE_URL", default="")).strip() or None
    return Settings(
        database_url=url,
        database_url_origin=_origin(url, in_file),
        database_url_in_file=bool(in_file),
        test_database_url=test_url,
        pool_size=int(_number(read, "PERSISTENCE_POOL_SIZE", 5, 1, whole=True)),
        max_overflow=int(_number(read, "PERSISTENCE_MAX_OVERFLOW", 15, 0, whole=True)),
        pool_timeout=_number(read, "PERSISTENCE_POOL_TIMEOUT", 30.0, 0.0, whole=False),
        pool_recycle=int(_number(read, "PERSISTENCE_POOL_RECYCLE", 240, 1, whole=True)),
        connect_timeout=int(_number(read, "PERSISTENCE_CONNECT_TIMEOUT", 10, 1, whole=True)),
        embedded_dir=Path(
            os.path.expanduser(read("PERSISTENCE_EMBEDDED_DIR", default=".persistence/pgdata"))
        ),
        pool_idle_timeout=_number(read, "PERSISTENCE_POOL_IDLE_TIMEOUT", 60.0, 0.0, whole=False),
        read_urls=_read_urls(read),
        read_max_lag=_number(read, "PERSISTENCE_READ_MAX_LAG", 5.0, 0.0, whole=False),
        timeout=_seconds_or_none(read, "PERSISTENCE_TIMEOUT", None),
        idle_in_transaction_timeout=_seconds_or_none(
            read, "PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT", 60.0
        ),
    )
