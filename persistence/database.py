"""From a URL to an engine: psycopg 3, pooler-safe, its units of work's pools; `init_db`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import URL, Engine, event
from sqlalchemy import create_engine as sa_create_engine

from persistence import statements
from persistence.config import Settings, load_settings
from persistence.connections import (
    client_settings,
    connect_error,
    database_of,
    remember_options,
)
from persistence.embedded import embedded_url
from persistence.errors import is_disconnect, translate
from persistence.urls import normalize_url

__all__ = [
    "configured_url",
    "create_engine",
    "dispose_engine",
    "engine_arguments",
    "get_engine",
    "init_db",
    "instrument",
    "left_usable",
    "normalize_url",
]

logger = logging.getLogger(__name__)

_default_engine: Engine | None = None
_default_lock = threading.Lock()

# The key of the advisory lock `init_db` takes ("tasks" in ASCII).
_SCHEMA_LOCK = 0x7461736B73


def _connect_translating(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    # Connection failures become this package's errors here, where we still know that
    # they happened while connecting (refused, timed out, bad credentials).
    try:
        return dialect.connect(*cargs, **cparams)
    except psycopg.Error as exc:
        raise connect_error(exc) from exc


def engine_arguments(
    url: str | URL, settings: Settings | None = None, **overrides: Any
) -> tuple[URL, dict[str, Any], Settings]:
    """The URL, `create_engine` keyword arguments and settings shared by both engines."""
    settings = settings or load_settings()
    sa_url = normalize_url(url)
    connect_args = {**client_settings(settings), **overrides.pop("connect_args", {})}
    options: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": settings.pool_recycle,
        "pool_pre_ping": False,
        # hstore is not used: looking its type up would cost a query on first connect.
        "use_native_hstore": False,
        "connect_args": connect_args,
    }
    options.update(overrides)
    return sa_url, options, settings


def instrument(engine: Engine) -> Engine:
    """Translate connection errors of `engine` (for an async engine: its `sync_engine`)."""
    event.listen(engine, "do_connect", _connect_translating)
    logger.info("engine created for %s", engine.url.render_as_string(hide_password=True))
    return engine


def create_engine(url: str | URL, settings: Settings | None = None, **overrides: Any) -> Engine:
    """Build an engine for `url` with the pool and timeouts from `settings`.

    Units of work on it take their connections from a pool of their own, sized by the
    same settings and `overrides` (`pool_size`, `max_overflow`, `pool_timeout`,
    `pool_recycle`, `connect_args`); the engine's SQLAlchemy pool serves SQLAlchemy-level
    use. `engine.dispose()` closes both. Nothing connects until first use. `overrides`
    are passed on to SQLAlchemy's `create_engine`. Raises `ConfigurationError` for a bad
    URL.
    """
    sa_url, options, settings = engine_arguments(url, settings, **overrides)
    engine = instrument(sa_create_engine(sa_url, **options))
    remember_options(engine, settings, options)
    return engine


def configured_url(settings: Settings) -> str:
    """`DATABASE_URL`, or the embedded PostgreSQL's URL (started now) when it is unset or empty.

    Raises `ConfigurationError` when the `embedded` extra is missing.
    """
    return settings.database_url or embedded_url(settings.embedded_dir)


def get_engine() -> Engine:
    """The process-wide default engine, built on first use from `DATABASE_URL`.

    With no `DATABASE_URL`, starts the embedded PostgreSQL. Raises `ConfigurationError`
    when settings are malformed or the embedded extra is missing.
    """
    global _default_engine
    with _default_lock:
        if _default_engine is None:
            settings = load_settings()
            _default_engine = create_engine(configured_url(settings), settings)
        return _default_engine


def dispose_engine() -> None:
    """Close the default engine's pooled connections and forget it (the next use rebuilds it).

    Never raises for connections that are already broken: they are simply dropped.
    """
    global _default_engine
    with _default_lock:
        engine, _default_engine = _default_engine, None
    if engine is not None:
        engine.dispose()


@contextmanager
def left_usable(connection: psycopg.Connection[Any]) -> Iterator[None]:
    """A pipeline that could not be left (the connection broke mid-way) leaves the
    connection unusable: close it, so that its pool discards it."""
    try:
        yield
    except psycopg.Error:
        if connection.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
            connection.close()
        raise


def init_db(engine: Engine | None = None) -> None:
    """Create the `tasks` table, its index and constraints if missing. Idempotent.

    Safe to call from several processes at once (one round trip). Raises a
    `PersistenceError` subclass if the database can't be reached or refuses.
    """
    pool = database_of(engine or get_engine()).primary
    lock = statements.advisory_lock()
    for attempt in (1, 2):
        lease = pool.getconn()
        connection = lease.connection
        try:
            with left_usable(connection), connection.pipeline():
                connection.execute("BEGIN")
                # Two processes creating the table at once would collide in the catalog.
                connection.execute(lock.sql, lock.args({"key": _SCHEMA_LOCK}))
                for ddl in statements.create_schema():
                    connection.execute(ddl.sql)
                connection.execute("COMMIT")
            return
        except psycopg.Error as exc:
            if attempt == 1 and is_disconnect(exc):
                # A pooled connection that died while idle fails at once; nothing was
                # done, so once more on a fresh one.
                pool.invalidate()
                continue
            raise translate(exc, "creating the tables") from exc
        finally:
            pool.putconn(lease)
