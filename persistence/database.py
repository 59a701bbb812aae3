"""From a URL to an engine: psycopg 3, a bounded pool, pooler-safe; and `init_db`."""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy import URL, Engine, event, func, make_url, select
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.util.concurrency import await_
from sqlmodel import SQLModel

from persistence.config import Settings, load_settings
from persistence.embedded import embedded_url
from persistence.errors import (
    ConfigurationError,
    ConnectionLostError,
    driver_errors,
    register_secret,
    translate,
)
from persistence.models import Task

__all__ = [
    "BEGIN_OPTION",
    "configured_url",
    "create_engine",
    "dispose_engine",
    "engine_arguments",
    "get_engine",
    "init_db",
    "instrument",
    "normalize_url",
    "transaction_options",
]

logger = logging.getLogger(__name__)

_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}

_default_engine: Engine | None = None
_default_lock = threading.Lock()


def normalize_url(raw: str | URL) -> URL:
    """Turn a URL as Neon's console gives it into one for SQLAlchemy's psycopg 3 dialect.

    `postgres://`, `postgresql://` and `postgresql+psycopg://` all mean psycopg 3; query
    parameters such as `sslmode=require&channel_binding=require` pass through to libpq.
    Raises `ConfigurationError` (echoing no part of the password) for anything else: another
    scheme, a port that is not a number, or an unencoded "@" in the user name or password.
    """
    if isinstance(raw, URL):
        url = raw
    else:
        text = raw.strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text.removeprefix("postgres://")
        # The password as written (maybe percent-encoded), so that it is scrubbed too.
        written = _WRITTEN_PASSWORD.match(text)
        register_secret(written.group(1) if written else None)
        if text.count("@") > 1:
            # SQLAlchemy (and libpq) end the password at the first "@": the rest of it
            # would become the host and be echoed in every connection error.
            raise ConfigurationError(
                "DATABASE_URL has more than one '@': only the one before the host may be "
                f"written as is. {_ENCODE_ADVICE}"
            )
        try:
            url = make_url(text)
        except ArgumentError:
            raise ConfigurationError(f"DATABASE_URL is not a valid URL: {_SHAPE}") from None
        except ValueError:
            # SQLAlchemy's int() of the port. Its text is not echoed: in a URL that lacks
            # the "@", what stands in the port's place is the password.
            raise ConfigurationError(
                f"DATABASE_URL's port is not a number: {_SHAPE}. {_ENCODE_ADVICE}"
            ) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigurationError(f"DATABASE_URL's port must be 1 to 65535: {_SHAPE}")
    if url.drivername not in _SCHEMES:
        raise ConfigurationError(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://...), got scheme "
            f"{url.drivername!r}"
        )
    password = url.password if isinstance(url.password, str) else None
    register_secret(password)
    register_secret(quote(password, safe="") if password else None)
    return url.set(drivername="postgresql+psycopg")


_SHAPE = "expected postgresql://user:password@host[:port]/database[?sslmode=require]"
_ENCODE_ADVICE = (
    "In the user name and password, write '@' as %40, ':' as %3A, '/' as %2F and '%' as %25."
)
# SQLAlchemy's own split: the user name ends at the first ":", the password at the next "@".
_WRITTEN_PASSWORD = re.compile(r"[\w+]+://[^:/]*:([^@]*)@")


def _connect_translating(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    # Connection failures become this package's errors here, where we still know that
    # they happened while connecting (refused, timed out, bad credentials).
    try:
        return dialect.connect(*cargs, **cparams)
    except psycopg.Error as exc:
        raise translate(exc, "connecting to the database", connecting=True) from exc


# Round trips are this package's speed (Neon is across a network). psycopg in its
# default mode sends BEGIN as a round trip of its own, and SQLAlchemy sends ROLLBACK after
# a read. Instead connections stay in autocommit, where reads before the first write need
# no transaction (under READ COMMITTED every statement takes a fresh snapshot anyway), and
# the first write carries an explicit BEGIN with it in one psycopg pipeline: BEGIN + the
# write cost one round trip, COMMIT another. Only statements run with the execution
# option below (set by the unit of work) are ever put in a transaction this way.
BEGIN_OPTION = "persistence_begin"

_SNAPSHOT_LEVELS = frozenset({"REPEATABLE READ", "SERIALIZABLE"})


def transaction_options(
    *, isolation_level: str | None = None, read_only: bool = False, eager: bool = False
) -> dict[str, Any]:
    """Execution options under which the first write begins a transaction.

    With REPEATABLE READ or SERIALIZABLE (or `eager`), the first statement of any kind
    begins it, so that every read shares the transaction's snapshot.
    """
    begin = "BEGIN"
    if isolation_level is not None:
        begin += f" ISOLATION LEVEL {isolation_level}"
    if read_only:
        begin += " READ ONLY"
    return {BEGIN_OPTION: (begin, eager or isolation_level in _SNAPSHOT_LEVELS)}


# A SELECT that locks rows must begin the transaction, or its locks end with it.
_LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)


def _is_read(statement: str) -> bool:
    return statement.lstrip()[:6].upper() == "SELECT" and not _LOCKING.search(statement)


def _begin_with_first_write(
    cursor: Any, statement: str, parameters: Any, context: Any, *, many: bool = False
) -> bool | None:
    begin = context.execution_options.get(BEGIN_OPTION)
    if begin is None:
        return None  # not in a unit of work: plain autocommit
    # The async engine hands over SQLAlchemy's adapter around a psycopg `AsyncCursor`.
    raw = cursor if isinstance(cursor, psycopg.Cursor) else cursor._cursor
    if raw.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return None  # already in the transaction
    sql, eager = begin
    if not eager and _is_read(statement):
        return None
    if raw is cursor:
        # Exiting the pipeline syncs: both results are in before SQLAlchemy reads the cursor.
        # `parameters` go on as given: SQLAlchemy escaped `%` in the statement for them.
        with _left_usable(raw.connection), raw.connection.pipeline():
            raw.connection.execute(sql)
            if many:
                raw.executemany(statement, parameters)
            else:
                raw.execute(statement, parameters)
    else:
        await_(_begin_with_async(cursor, sql, statement, parameters, many=many))
    return True


@contextmanager
def _left_usable(connection: psycopg.Connection[Any]) -> Iterator[None]:
    try:
        yield
    except psycopg.Error:
        # A pipeline that could not be left (the connection broke mid-way) leaves the
        # connection unusable: close it, so that SQLAlchemy discards it instead of pooling it.
        if connection.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
            connection.close()
        raise


async def _begin_with_async(
    adapter: Any, begin: str, statement: str, parameters: Any, *, many: bool
) -> None:
    # The same as above on a psycopg `AsyncCursor`, from inside SQLAlchemy's greenlet; then
    # the rows are buffered as SQLAlchemy's adapter buffers them (its results are sync).
    raw: psycopg.AsyncCursor[Any] = adapter._cursor
    connection = raw.connection
    try:
        async with connection.pipeline():
            await connection.execute(begin)
            if many:
                await raw.executemany(statement, parameters)
            else:
                await raw.execute(statement, parameters)
    except psycopg.Error:
        if connection.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
            await connection.close()  # as `_left_usable` does: never pooled half-left
        raise
    result = raw.pgresult
    if result is not None and result.status == psycopg.pq.ExecStatus.TUPLES_OK:
        adapter._rows = collections.deque(await raw.fetchall())


def _begin_with_first_write_no_params(cursor: Any, statement: str, context: Any) -> bool | None:
    return _begin_with_first_write(cursor, statement, None, context)


def _begin_with_first_write_many(
    cursor: Any, statement: str, parameters: Any, context: Any
) -> bool | None:
    # An ORM flush of several rows, or an UPDATE with a list of parameter sets.
    return _begin_with_first_write(cursor, statement, parameters, context, many=True)


def engine_arguments(
    url: str | URL, settings: Settings | None = None, **overrides: Any
) -> tuple[URL, dict[str, Any]]:
    """The URL and `create_engine` keyword arguments shared by the sync and async engines."""
    settings = settings or load_settings()
    sa_url = normalize_url(url)
    connect_args: dict[str, Any] = {
        # Transaction-mode poolers (Neon's -pooler endpoint, PgBouncer < 1.21) can't keep
        # protocol-level prepared statements: never let psycopg create them.
        "prepare_threshold": None,
        "connect_timeout": settings.connect_timeout,
        "application_name": "persistence",
    }
    options: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": settings.pool_recycle,
        # A pre-ping costs a round trip on every checkout; dead connections are
        # detected on use instead.
        "pool_pre_ping": False,
        "connect_args": connect_args,
        "isolation_level": "AUTOCOMMIT",
    }
    options.update(overrides)
    return sa_url, options


def instrument(engine: Engine) -> Engine:
    """Attach the package's connection behaviour to `engine` (for an async engine: its
    `sync_engine`): connection errors translated, BEGIN pipelined with the first write."""
    event.listen(engine, "do_connect", _connect_translating)
    event.listen(engine, "do_execute", _begin_with_first_write)
    event.listen(engine, "do_execute_no_params", _begin_with_first_write_no_params)
    event.listen(engine, "do_executemany", _begin_with_first_write_many)
    logger.info(
        "engine created for %s (pool size %s)",
        engine.url.render_as_string(hide_password=True),
        getattr(engine.pool, "size", lambda: "-")(),
    )
    return engine


def create_engine(url: str | URL, settings: Settings | None = None, **overrides: Any) -> Engine:
    """Build an engine for `url` with the pool and timeouts from `settings`.

    Its connections are in autocommit: `UnitOfWork` begins transactions (lazily, with the
    first write). Nothing connects until first use. `overrides` are passed on to
    SQLAlchemy's `create_engine`. Raises `ConfigurationError` for a bad URL.
    """
    sa_url, options = engine_arguments(url, settings, **overrides)
    return instrument(sa_create_engine(sa_url, **options))


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


def init_db(engine: Engine | None = None) -> None:
    """Create the `tasks` table, its index and constraints if missing. Idempotent.

    Safe to call from several processes at once. Raises a `PersistenceError` subclass
    if the database can't be reached or refuses.
    """
    engine = (engine or get_engine()).execution_options(**transaction_options(eager=True))
    metadata = SQLModel.metadata
    for attempt in (1, 2):
        try:
            with driver_errors("creating the tables"), engine.begin() as connection:
                # Two processes creating the table at once would collide in the catalog.
                connection.execute(select(func.pg_advisory_xact_lock(0x7461736B73)))
                metadata.create_all(connection, tables=[metadata.tables[Task.__tablename__]])
            return
        except ConnectionLostError:
            # A pooled connection that died while idle fails at once; nothing was done,
            # so once more on a fresh one (the pool has dropped the dead ones by now).
            if attempt == 2:
                raise
