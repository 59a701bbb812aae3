"""Where units of work get their connections: the primary's pool, or a read replica's.

Each engine made by `create_engine` / `create_async_engine` has one `Database`: how to
connect (psycopg's arguments, from the URL and the settings), the primary's pool, and one
pool per read replica (`DATABASE_READ_URL`). Units of work take raw psycopg connections
from these pools; SQLAlchemy's own pool serves only SQLAlchemy-level use of the engine.
A replica that is down or lagging is left aside for a few seconds; with no replica left,
the primary serves reads.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import psycopg
from sqlalchemy import URL, Engine, event
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from persistence.config import Settings, load_settings
from persistence.errors import PersistenceError, translate
from persistence.pool import AsyncConnectionPool, ConnectionPool, PoolOptions, PoolStats
from persistence.urls import normalize_url

__all__ = [
    "Database",
    "Replica",
    "Source",
    "async_connector",
    "client_settings",
    "connect_arguments",
    "connect_error",
    "connector",
    "database_of",
    "pool_options",
    "pool_stats",
    "read_replicas",
    "remember_options",
]

logger = logging.getLogger(__name__)

P = TypeVar("P", ConnectionPool, AsyncConnectionPool)

# A replica that failed is left aside this long before it is tried again, in seconds.
DOWN_FOR = 5.0
LAGGING_FOR = 1.0
# A replica not known to have replayed a causal token is asked again after this long.
ASK_AGAIN_AFTER = 1.0

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


def client_settings(settings: Settings) -> dict[str, Any]:
    """What every connection of the package (its units of work's and SQLAlchemy's) asks
    psycopg for, whoever opens it."""
    return {
        # Transaction-mode poolers (Neon's -pooler endpoint, PgBouncer < 1.21) can't keep
        # protocol-level prepared statements: never let psycopg create them.
        "prepare_threshold": None,
        "connect_timeout": settings.connect_timeout,
        "application_name": "persistence",
    }


def connect_arguments(url: URL, settings: Settings, extra: dict[str, Any]) -> dict[str, Any]:
    """psycopg's `connect()` arguments for `url`: libpq's parameters as SQLAlchemy's
    psycopg dialect reads them from the URL (TLS query parameters pass through), and
    the package's connection settings."""
    _args, found = _DIALECT.create_connect_args(url)  # type: ignore[no-untyped-call]
    return {**found, "autocommit": True, **client_settings(settings), **extra}


def pool_options(settings: Settings, overrides: dict[str, Any]) -> PoolOptions:
    """The units of work's pool, from the settings and `create_engine`'s keyword
    arguments (`pool_size`, `max_overflow`, `pool_timeout`, `pool_recycle`; below 0, as
    in SQLAlchemy: never recycled)."""
    size = int(overrides.get("pool_size", settings.pool_size))
    overflow = int(overrides.get("max_overflow", settings.max_overflow))
    recycle = float(overrides.get("pool_recycle", settings.pool_recycle))
    return PoolOptions(
        min_size=size,
        max_size=max(size + max(overflow, 0), 1),
        timeout=float(overrides.get("pool_timeout", settings.pool_timeout)),
        # SQLAlchemy's `pool_recycle=-1`: never (taken as is, every connection would be
        # too old to lend again, and closed as it comes back).
        max_lifetime=recycle if recycle >= 0 else math.inf,
        max_idle=settings.pool_idle_timeout,
    )


@dataclass
class Replica(Generic[P]):
    """A read replica's pool, and until when it is left aside."""

    pool: P
    label: str
    aside_until: float = 0.0
    replayed: int = 0
    """How far it was last seen to have replayed (a WAL position; it only grows)."""
    seen_at: float = 0.0
    """When that was (`time.monotonic()`)."""

    def saw(self, replayed: int) -> None:
        """A status check found it replayed this far."""
        self.replayed = max(self.replayed, replayed)
        self.seen_at = time.monotonic()


@dataclass
class Database(Generic[P]):
    """An engine's pools: the primary's and the replicas'; and how to open a connection
    of one's own (to resolve a lost COMMIT)."""

    settings: Settings
    primary: P
    primary_arguments: dict[str, Any]
    replicas: list[Replica[P]] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _commits: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=1024)
    )
    _commits_lock: threading.Lock = field(default_factory=threading.Lock)

    def committed(self, at: int) -> None:
        """A unit of work committed a write; the primary's WAL stood at `at` after it."""
        with self._commits_lock:
            self._commits.append((at, time.monotonic()))

    def unreplayed_for(self, replayed: int) -> float:
        """For how many seconds a replica that has replayed up to `replayed` has missed a
        commit of this process's (0 if it missed none): a replica cut off from the primary
        thinks it is up to date, but this process knows better."""
        with self._commits_lock:
            if not self._commits or self._commits[-1][0] <= replayed:
                return 0.0  # it has replayed the latest: the usual case, at once
            for at, when in self._commits:
                if at > replayed:
                    return time.monotonic() - when
        return 0.0

    def pool_for(self, read_only: bool, after: int = 0) -> tuple[P, Replica[P] | None]:
        """The pool a unit of work takes its connection from: a replica's for a read-only
        one (in turn, skipping those left aside), else the primary's.

        With a causal token's position `after`: a replica already seen to have replayed
        that far; else one not asked for a while (its status check, riding with the
        read, tells); else the primary — a read right after a write would otherwise be
        sent to a replica that has not caught up yet, only to be sent again."""
        if read_only and self.replicas:
            now = time.monotonic()
            turn = next(self._turn)
            ready = [r for r in self.replicas if r.aside_until <= now]
            if after:
                caught_up = [r for r in ready if r.replayed >= after]
                ready = caught_up or [r for r in ready if now - r.seen_at > ASK_AGAIN_AFTER]
            if ready:
                replica = ready[turn % len(ready)]
                return replica.pool, replica
        return self.primary, None

    def set_aside(self, replica: Replica[P], why: str, *, down: bool) -> None:
        """Leave `replica` aside for a while: down (it failed) or lagging."""
        replica.aside_until = time.monotonic() + (DOWN_FOR if down else LAGGING_FOR)
        logger.warning("read replica %s left aside: %s", replica.label, why)
        if down:
            replica.pool.invalidate()

    def pools(self) -> list[P]:
        """Every pool: the primary's first."""
        found = [self.primary]
        found.extend(replica.pool for replica in self.replicas)
        return found


class Source(NamedTuple):
    """A server to connect to, for error messages: what it is, and its URL's setting."""

    server: str
    setting: str


PRIMARY = Source("the database", "DATABASE_URL")


def connect_error(exc: psycopg.Error, source: Source = PRIMARY) -> PersistenceError:
    """`exc`, raised while connecting to `source`, as the package's error."""
    return translate(exc, f"connecting to {source.server}", connecting=True, setting=source.setting)


def connector(
    arguments: dict[str, Any], source: Source = PRIMARY
) -> Callable[[], psycopg.Connection[Any]]:
    """How a pool opens a connection with `arguments` (errors translated, naming `source`:
    which server, and which setting its URL came from)."""

    def connect() -> psycopg.Connection[Any]:
        try:
            return psycopg.Connection.connect(**arguments)
        except psycopg.Error as exc:
            raise connect_error(exc, source) from exc

    return connect


def async_connector(arguments: dict[str, Any], source: Source = PRIMARY) -> Callable[[], Any]:
    """How an async pool opens a connection with `arguments` (as `connector`)."""

    async def connect() -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(**arguments)
        except psycopg.Error as exc:
            raise connect_error(exc, source) from exc

    return connect


# What `create_engine` was told, per engine: its pools are built from it on first use.
_options: weakref.WeakKeyDictionary[Engine, tuple[Settings, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
_databases: weakref.WeakKeyDictionary[Engine, dict[bool, Database[Any]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def remember_options(engine: Engine, settings: Settings, overrides: dict[str, Any]) -> None:
    """Record how `engine` was made, so that its units of work's pools match it."""
    with _lock:
        _options[engine] = (settings, dict(overrides))


def _make(engine: Engine, asynchronous: bool) -> Database[Any]:
    settings, overrides = _options.get(engine) or (load_settings(), {})
    options = pool_options(settings, overrides)
    extra = dict(overrides.get("connect_args", {}))
    primary = connect_arguments(engine.url, settings, extra)

    def pool(arguments: dict[str, Any], source: Source = PRIMARY) -> Any:
        if asynchronous:
            return AsyncConnectionPool(async_connector(arguments, source), options)
        return ConnectionPool(connector(arguments, source), options)

    replicas = [
        Replica(pool(connect_arguments(url, settings, extra), source), label)
        for url, label, source in read_replicas(settings)
    ]
    return Database(settings, pool(primary), primary, replicas)


def read_replicas(settings: Settings) -> list[tuple[URL, str, Source]]:
    """`DATABASE_READ_URL`'s replicas: URL, label ("#1 (host:port)") and source, in order.

    Raises `ConfigurationError` naming the setting and the replica for a URL that is not
    one."""
    found = []
    for n, raw in enumerate(settings.read_urls):
        url = normalize_url(raw, setting=f"DATABASE_READ_URL (replica #{n + 1})")
        label = f"#{n + 1} ({url.host or 'local'}:{url.port or 5432})"
        found.append((url, label, Source(f"read replica {label}", "DATABASE_READ_URL")))
    return found


def database_of(engine: Engine, *, asynchronous: bool = False) -> Database[Any]:
    """The units of work's pools of `engine` (made on first use, closed with
    `engine.dispose()`). For an async engine, pass its `sync_engine` and
    `asynchronous=True`."""
    found = _databases.get(engine, {}).get(asynchronous)
    if found is not None:
        return found
    with _lock:
        kinds = _databases.setdefault(engine, {})
        found = kinds.get(asynchronous)
        if found is None:
            found = kinds[asynchronous] = _make(engine, asynchronous)
            if not event.contains(engine, "engine_disposed", _forget):
                event.listen(engine, "engine_disposed", _forget)
    return found


def pool_stats(engine: Any) -> PoolStats:
    """The counts of the pool units of work on `engine` (an `Engine` or `AsyncEngine`)
    take their connections from: open, idle, lent, waiting, opened so far."""
    sync_engine = getattr(engine, "sync_engine", engine)
    asynchronous = sync_engine is not engine
    stats: PoolStats = database_of(sync_engine, asynchronous=asynchronous).primary.stats()
    return stats


def _forget(engine: Engine) -> None:
    # `engine.dispose()`: close the units of work's idle connections too (the lent ones
    # are closed when given back); the next unit of work builds new pools.
    with _lock:
        kinds = _databases.pop(engine, {})
    for database in kinds.values():
        for pool in database.pools():
            pool.close_now()
