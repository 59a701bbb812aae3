"""What the benchmark sections share: the database, raw SQL, SQL capture, engine disposal."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL, make_url

from benchmarks.proxy import target_of

DATABASE = "persistence_bench"
USER = "bench-user"
ROOT = Path(__file__).resolve().parent.parent
"""The repository: the working directory of every child process the benchmark starts."""

# The statements raw psycopg sends: what the package's unit of work sends, written by hand.
INSERT = "INSERT INTO tasks (user_id, title) VALUES (%s, %s) RETURNING *"
TOGGLE = (
    "UPDATE tasks SET complete = NOT complete, updated_at = statement_timestamp() "
    "WHERE user_id = %s AND id = %s RETURNING *"
)
LIST = "SELECT * FROM tasks WHERE user_id = %s ORDER BY created_at DESC, id DESC LIMIT 50"
LIST_ALL = "SELECT * FROM tasks WHERE user_id = %s ORDER BY created_at DESC, id DESC"


def normalize(raw: str | URL) -> URL:
    """A server URL as SQLAlchemy's psycopg 3 dialect spells it (`postgres://` accepted)."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text.removeprefix("postgres://")
        raw = make_url(text)
    return raw.set(drivername="postgresql+psycopg")


def libpq(url: URL) -> str:
    """The URL for `psycopg.connect` (password included: never print it)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def package(url: URL) -> str:
    """The URL as a string for `persistence.create_engine` (password included)."""
    return url.render_as_string(hide_password=False)


def shown(url: URL) -> str:
    """The URL for printing: the password masked."""
    return url.render_as_string(hide_password=True)


def socket_dir(url: URL) -> str | None:
    value = url.query.get("host")
    return value if isinstance(value, str) else None


def target(url: URL) -> tuple[str, int] | str:
    """Where a proxy forwards to reach `url`'s server."""
    return target_of(url.host, url.port, socket_dir(url))


def through(url: URL, port: int) -> URL:
    """`url` pointed at a proxy on 127.0.0.1:`port` (TLS parameters kept)."""
    query = {k: v for k, v in url.query.items() if k != "host"}
    return url.set(host="127.0.0.1", port=port, query=query)


def bench_url() -> URL:
    """`persistence_bench` on the server of TEST_DATABASE_URL, else DATABASE_URL, else the
    embedded PostgreSQL; created if missing and kept (seeded rows survive across runs)."""
    from persistence.testing import server_url

    base = normalize(server_url())
    with psycopg.connect(libpq(base), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if exists is None:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')
    return base.set(database=DATABASE)


def delete_tasks(url: URL, user_like: str) -> None:
    """Remove the rows a section wrote (users matching the LIKE pattern `user_like`)."""
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        connection.execute("DELETE FROM tasks WHERE user_id LIKE %s", (user_like,))


def ensure_tasks(url: URL, user_id: str, at_least: int = 50) -> None:
    """Give `user_id` at least `at_least` tasks, so that a 50-row page really has 50 rows
    whichever implementation is measured first."""
    missing = at_least - count_tasks(url, user_id)
    if missing > 0:
        with psycopg.connect(libpq(url), autocommit=True) as connection:
            connection.execute(
                "INSERT INTO tasks (user_id, title) SELECT %s, 'seed ' || n "
                "FROM generate_series(1, %s) AS n",
                (user_id, missing),
            )


def count_tasks(url: URL, user_id: str) -> int:
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM tasks WHERE user_id = %s", (user_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def dispose(engine: Any) -> None:
    """Close a sync engine's connections, whatever kind of engine the package returns."""
    close = getattr(engine, "dispose", None) or getattr(engine, "close", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))


async def adispose(engine: Any) -> None:
    """Close an async engine's connections (on the loop that used it)."""
    close = getattr(engine, "dispose", None) or getattr(engine, "close", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            await result


async def _awaited(awaitable: Any) -> None:
    await awaitable


def pool_maximum() -> int:
    """The default pool's maximum number of connections, from the package's settings."""
    from persistence import load_settings

    settings = load_settings()
    size = getattr(settings, "pool_size", 5)
    overflow = getattr(settings, "max_overflow", 15)
    return int(size) + int(overflow)


def median_ms(work: Callable[[], Any], reps: int) -> float:
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def skipped(reason: str) -> None:
    """Say loudly that (part of) a section did not run."""
    print(f"**skipped: {reason}**", flush=True)
    print(f"SKIPPED: {reason}", file=sys.stderr, flush=True)


# --- the SQL the package sends, as psycopg receives it --------------------------------


@dataclass(frozen=True)
class Sent:
    """One call the package made on a psycopg cursor."""

    method: str  # "execute" or "executemany"
    query: str
    params: Any
    client_side: bool = False
    """Sent on a client-side-binding cursor (several statements as one simple query)."""

    @property
    def size(self) -> int:
        """How many values it carries (an array counts its elements)."""
        values: Sequence[Any]
        if isinstance(self.params, dict):
            values = list(self.params.values())
        elif isinstance(self.params, list | tuple):
            values = self.params
        else:
            return 0
        if self.method == "executemany":
            return sum(Sent("execute", self.query, row, self.client_side).size for row in values)
        return sum(len(v) if isinstance(v, list | tuple) else 1 for v in values)

    @property
    def begins(self) -> bool:
        """Whether it opens a transaction of its own (BEGIN first, maybe more after it)."""
        return self.query.lstrip().upper().startswith(("BEGIN", "START"))

    @property
    def transaction_control(self) -> bool:
        word = self.query.lstrip().split(None, 1)[0].upper() if self.query.strip() else ""
        return word in {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START"}


def _text(query: Any, cursor: Any) -> str:
    if isinstance(query, bytes):
        return query.decode()
    if isinstance(query, str):
        return query
    return str(query.as_string(cursor.connection))


@contextmanager
def capture_sql() -> Iterator[list[Sent]]:
    """Record every statement sent through psycopg's (sync and async) cursors meanwhile.

    This is the boundary between the package and the driver: whatever SQLAlchemy or the
    package builds, psycopg gets a query and its parameters here. The methods are wrapped
    (calling through) only inside the block.
    """
    seen: list[Sent] = []
    originals: list[tuple[type, str, Any]] = []

    def wrap(cls: type, name: str) -> None:
        original = cls.__dict__[name]
        originals.append((cls, name, original))
        if inspect.iscoroutinefunction(original):

            async def spy_async(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
                client = isinstance(self, psycopg.AsyncClientCursor)
                seen.append(Sent(name, _text(query, self), params, client))
                return await original(self, query, params, **kw)

            setattr(cls, name, spy_async)
        else:

            def spy(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
                client = isinstance(self, psycopg.ClientCursor)
                seen.append(Sent(name, _text(query, self), params, client))
                return original(self, query, params, **kw)

            setattr(cls, name, spy)

    classes: tuple[type, ...] = (psycopg.Cursor, psycopg.AsyncCursor)
    for cls in classes:
        for name in ("execute", "executemany"):
            if name in cls.__dict__:
                wrap(cls, name)
    try:
        yield seen
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def replay(connection: psycopg.Connection[Any], sent: Sequence[Sent]) -> int:
    """Send `sent` as the package sent it, on `connection` (autocommit), fetching every
    result of every statement; return the number of rows fetched. Statements that carry
    their own BEGIN and COMMIT are sent whole, on the same kind of cursor; otherwise the
    transaction control is left out and the rest runs in one transaction."""
    rows = 0
    own = any(call.begins for call in sent)
    with contextlib.nullcontext() if own else connection.transaction():
        for call in sent:
            if call.transaction_control and not own:
                continue
            kind = psycopg.ClientCursor if call.client_side else psycopg.Cursor
            with kind(connection) as cursor:
                if call.method == "executemany":
                    cursor.executemany(call.query, call.params, returning=True)
                else:
                    cursor.execute(call.query, call.params)
                while True:
                    if cursor.pgresult is not None and cursor.description is not None:
                        rows += len(cursor.fetchall())
                    if not cursor.nextset():
                        break
    return rows
