"""`python -m benchmarks`: round trips and timings of units of work, bulk rows/s, keyset pages.

Runs against the server of TEST_DATABASE_URL (else DATABASE_URL, else the embedded
PostgreSQL), in a database `persistence_bench` that it creates and keeps (so the 1M-row
page benchmark seeds once). Each unit of work runs through a latency-injecting proxy; the
table shows, per RTT, the median wall time and the round trips counted by the proxy, for
this package, plain SQLModel (the usual tutorial code) and raw psycopg in a pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlmodel
from sqlalchemy import URL, Engine, text
from sqlmodel import Session, col, select

from benchmarks.proxy import LatencyProxy, target_of
from persistence import (
    AsyncUnitOfWork,
    Task,
    UnitOfWork,
    create_async_engine,
    create_engine,
    init_db,
)
from persistence.database import normalize_url
from persistence.models import TaskCreate
from persistence.testing import server_url

DATABASE = "persistence_bench"
USER = "bench-user"

Work = Callable[[], Any]


def _bench_url() -> URL:
    base = normalize_url(server_url())
    admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE}
        ).first()
        if exists is None:
            connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()
    return base.set(database=DATABASE)


def _through(url: URL, proxy: LatencyProxy) -> URL:
    query = {k: v for k, v in url.query.items() if k != "host"}
    return url.set(host="127.0.0.1", port=proxy.port, query=query)


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# --- the three implementations of each unit of work -------------------------------------


class Ours:
    """This package."""

    name = "persistence"

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url)
        self.task_id = self.create()

    def list(self) -> None:
        with UnitOfWork(self.engine) as uow:
            uow.tasks.list(user_id=USER, limit=50)

    def create(self) -> int:
        with UnitOfWork(self.engine) as uow:
            return uow.tasks.create(user_id=USER, title="bench").id

    def toggle(self) -> None:
        with UnitOfWork(self.engine) as uow:
            uow.tasks.toggle_complete(user_id=USER, task_id=self.task_id)

    def mixed(self) -> None:
        with UnitOfWork(self.engine) as uow:
            task = uow.tasks.create(user_id=USER, title="bench")
            uow.tasks.toggle_complete(user_id=USER, task_id=task.id)
            uow.tasks.list(user_id=USER, limit=50)

    def close(self) -> None:
        self.engine.dispose()


class OursAsync:
    """This package's `AsyncUnitOfWork`, each unit of work awaited on a private loop."""

    name = "persistence async"

    def __init__(self, url: URL) -> None:
        self.runner = asyncio.Runner()
        self.engine = create_async_engine(url)
        self.task_id = self.create()

    def _run(self, work: Callable[[AsyncUnitOfWork], Awaitable[Any]]) -> Any:
        async def unit() -> Any:
            async with AsyncUnitOfWork(self.engine) as uow:
                return await work(uow)

        return self.runner.run(unit())

    def list(self) -> None:
        self._run(lambda uow: uow.tasks.list(user_id=USER, limit=50))

    def create(self) -> int:
        async def create(uow: AsyncUnitOfWork) -> int:
            return (await uow.tasks.create(user_id=USER, title="bench")).id

        return int(self._run(create))

    def toggle(self) -> None:
        self._run(lambda uow: uow.tasks.toggle_complete(user_id=USER, task_id=self.task_id))

    def mixed(self) -> None:
        async def mixed(uow: AsyncUnitOfWork) -> None:
            task = await uow.tasks.create(user_id=USER, title="bench")
            await uow.tasks.toggle_complete(user_id=USER, task_id=task.id)
            await uow.tasks.list(user_id=USER, limit=50)

        self._run(mixed)

    def close(self) -> None:
        self.runner.run(self.engine.dispose())
        self.runner.close()


class PlainSQLModel:
    """SQLModel as tutorials write it: a Session per unit of work, psycopg defaults."""

    name = "plain SQLModel"

    def __init__(self, url: URL) -> None:
        self.engine: Engine = sqlmodel.create_engine(url)
        with Session(self.engine) as session:
            task = Task(user_id=USER, title="bench")
            session.add(task)
            session.commit()
            session.refresh(task)
            self.task_id = task.id

    def _listed(self, session: Session) -> list[Task]:
        statement = (
            select(Task)
            .where(col(Task.user_id) == USER)
            .order_by(col(Task.created_at).desc(), col(Task.id).desc())
            .limit(50)
        )
        return list(session.exec(statement).all())

    def list(self) -> None:
        with Session(self.engine) as session:
            self._listed(session)

    def create(self) -> None:
        with Session(self.engine) as session:
            session.add(Task(user_id=USER, title="bench"))
            session.commit()

    def toggle(self) -> None:
        with Session(self.engine) as session:
            task = session.get(Task, self.task_id)
            assert task is not None
            task.complete = not task.complete
            session.commit()

    def mixed(self) -> None:
        with Session(self.engine) as session:
            task = Task(user_id=USER, title="bench")
            session.add(task)
            session.flush()
            task.complete = not task.complete
            session.flush()
            self._listed(session)
            session.commit()

    def close(self) -> None:
        self.engine.dispose()


_INSERT = "INSERT INTO tasks (user_id, title) VALUES (%s, %s) RETURNING *"
_TOGGLE = (
    "UPDATE tasks SET complete = NOT complete, updated_at = statement_timestamp() "
    "WHERE user_id = %s AND id = %s RETURNING *"
)
_LIST = "SELECT * FROM tasks WHERE user_id = %s ORDER BY created_at DESC, id DESC LIMIT 50"


class RawPsycopg:
    """Hand-written psycopg 3 in pipeline mode: BEGIN rides with the first statement, each
    later statement waits for the one before (its input may depend on it), then COMMIT."""

    name = "raw psycopg"

    def __init__(self, url: URL) -> None:
        self.connection = psycopg.connect(_libpq(url), autocommit=True, prepare_threshold=None)
        self.task_id = self.create()

    def list(self) -> None:
        self.connection.execute(_LIST, (USER,)).fetchall()

    def create(self) -> int:
        with self.connection.pipeline():
            self.connection.execute("BEGIN")
            row = self.connection.execute(_INSERT, (USER, "bench"))
        task_id = int(row.fetchone()[0])  # type: ignore[index]
        self.connection.execute("COMMIT")
        return task_id

    def toggle(self) -> None:
        with self.connection.pipeline():
            self.connection.execute("BEGIN")
            cursor = self.connection.execute(_TOGGLE, (USER, self.task_id))
        cursor.fetchall()
        self.connection.execute("COMMIT")

    def mixed(self) -> None:
        with self.connection.pipeline():
            self.connection.execute("BEGIN")
            row = self.connection.execute(_INSERT, (USER, "bench"))
        task_id = row.fetchone()[0]  # type: ignore[index]
        self.connection.execute(_TOGGLE, (USER, task_id)).fetchall()
        self.connection.execute(_LIST, (USER,)).fetchall()
        self.connection.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


IMPLEMENTATIONS = (Ours, OursAsync, PlainSQLModel, RawPsycopg)
RAW = len(IMPLEMENTATIONS) - 1
OPERATIONS = ("list", "create", "toggle", "mixed")
LABELS = {
    "list": "only reads (one list)",
    "create": "create one task",
    "toggle": "toggle_complete one task",
    "mixed": "create + toggle + list",
}


def _measure(proxy: LatencyProxy, work: Work, reps: int) -> tuple[float, int]:
    work()  # warm: caches, the pool's connection
    timings, trips = [], []
    for _ in range(reps):
        proxy.reset_counts()
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
        trips.append(proxy.round_trips)
    # The median: psycopg's defaults prepare a statement on its 5th run, one extra trip.
    return statistics.median(timings), int(statistics.median(trips))


def round_trip_table(url: URL, rtts: list[float], reps: int) -> None:
    print("\n## Units of work: median ms and round trips counted by the proxy\n")
    header = "| unit of work | RTT ms | " + " | ".join(i.name for i in IMPLEMENTATIONS)
    print(header + " | eff. RT (ours) | ours / raw |")
    print("|---" * (len(IMPLEMENTATIONS) + 4) + "|")
    target = target_of(url.host, url.port, _socket_dir(url))
    with LatencyProxy(target) as proxy:
        impls = [impl(_through(url, proxy)) for impl in IMPLEMENTATIONS]
        try:
            for operation in OPERATIONS:
                for rtt in rtts:
                    proxy.rtt_ms = rtt
                    cells, results = [], []
                    for impl in impls:
                        ms, trips = _measure(proxy, getattr(impl, operation), reps)
                        results.append(ms)
                        cells.append(f"{ms:.1f} ms, {trips} RT")
                    effective = f"{results[0] / rtt:.2f}" if rtt else "-"
                    ratio = f"{results[0] / results[RAW]:.2f}x"
                    print(
                        f"| {LABELS[operation]} | {rtt:g} | "
                        + " | ".join(cells)
                        + f" | {effective} | {ratio} |"
                    )
                    sys.stdout.flush()
        finally:
            for impl in impls:
                impl.close()


def concurrency(url: URL, rtts: list[float], tasks: int = 200, pool: int = 10) -> None:
    print(f"\n## {tasks} concurrent tasks on one event loop, a pool of {pool}\n")
    print("Each task runs one unit of work: create + toggle_complete + list.\n")
    print("| RTT ms | wall s | units of work/s | round trips |")
    print("|---|---|---|---|")
    target = target_of(url.host, url.port, _socket_dir(url))
    with LatencyProxy(target) as proxy:
        through = _through(url, proxy)

        async def run() -> float:
            engine = create_async_engine(through, pool_size=pool, max_overflow=0)

            async def one(n: int) -> None:
                async with AsyncUnitOfWork(engine) as uow:
                    task = await uow.tasks.create(user_id=f"{USER}-{n % 20}", title="c")
                    await uow.tasks.toggle_complete(user_id=f"{USER}-{n % 20}", task_id=task.id)
                    await uow.tasks.list(user_id=f"{USER}-{n % 20}", limit=50)

            await asyncio.gather(*(one(n) for n in range(pool)))  # open the pool
            proxy.reset_counts()
            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(tasks)))
            elapsed = time.perf_counter() - started
            await engine.dispose()
            return elapsed

        for rtt in rtts:
            proxy.rtt_ms = rtt
            elapsed = asyncio.run(run())
            print(
                f"| {rtt:g} | {elapsed:.2f} | {tasks / elapsed:,.0f} | "
                f"{proxy.round_trips} ({proxy.round_trips / tasks:.1f} a unit) |"
            )


def _socket_dir(url: URL) -> str | None:
    value = url.query.get("host")
    return value if isinstance(value, str) else None


# --- bulk ---------------------------------------------------------------------------------


def _items(n: int) -> list[dict[str, Any]]:
    return [{"title": f"bulk task {i}", "description": None} for i in range(n)]


def bulk(url: URL, rows: int, reps: int) -> None:
    print(f"\n## Bulk create: {rows} tasks per unit of work, rows/s (median of {reps})\n")
    items = _items(rows)
    engine = create_engine(url)
    plain = sqlmodel.create_engine(url)
    raw = psycopg.connect(_libpq(url), autocommit=True, prepare_threshold=None)

    def ours() -> None:
        with UnitOfWork(engine) as uow:
            uow.tasks.create_many(user_id="bulk", items=items)

    def plain_sqlmodel() -> None:
        with Session(plain) as session:
            tasks = [
                Task.model_validate(TaskCreate.model_validate({**i, "user_id": "bulk"}))
                for i in items
            ]
            session.add_all(tasks)
            session.commit()

    statement = (
        "INSERT INTO tasks (user_id, title, description) VALUES "
        + ",".join(["(%s, %s, %s)"] * rows)
        + " RETURNING *"
    )

    def raw_psycopg() -> None:
        params: list[Any] = []
        for item in items:
            params += ["bulk", item["title"], item["description"]]
        with raw.transaction():
            raw.execute(statement, params).fetchall()

    results = {}
    for name, work in (
        ("persistence", ours),
        ("plain SQLModel", plain_sqlmodel),
        ("raw psycopg", raw_psycopg),
    ):
        work()
        timings = []
        for _ in range(reps):
            started = time.perf_counter()
            work()
            timings.append(time.perf_counter() - started)
        results[name] = rows / statistics.median(timings)
    print("| implementation | rows/s |")
    print("|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} |")
    ours_rate = results["persistence"]
    print(
        f"\npersistence = {ours_rate / results['plain SQLModel']:.1f}x plain SQLModel, "
        f"{ours_rate / results['raw psycopg'] * 100:.0f}% of raw psycopg"
    )
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM tasks WHERE user_id = 'bulk'"))
    engine.dispose()
    plain.dispose()
    raw.close()


# --- keyset pages -------------------------------------------------------------------------


def _seed(engine: Engine, users: int, per_user: int) -> None:
    with UnitOfWork(engine) as uow:
        have = uow.tasks.count(user_id=f"page-user-{users - 1}")
    if have >= per_user:
        return
    print(f"seeding {users * per_user:,} tasks ({users} users x {per_user:,})...", flush=True)
    started = time.perf_counter()
    for user in range(users):
        with UnitOfWork(engine) as uow:
            done = uow.tasks.count(user_id=f"page-user-{user}")
        for start in range(done, per_user, 1000):
            with UnitOfWork(engine) as uow:
                batch = min(1000, per_user - start)
                uow.tasks.create_many(user_id=f"page-user-{user}", items=_items(batch))
    with engine.connect() as connection:
        connection.execute(text("ANALYZE tasks"))
    print(f"seeded in {time.perf_counter() - started:.0f} s")


@contextmanager
def _timer(samples: list[float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    samples.append((time.perf_counter() - started) * 1000)


def pages(url: URL, total: int, reps: int) -> None:
    users, per_user = max(total // 10_000, 1), min(total, 10_000)
    print(f"\n## Keyset pages: {users * per_user:,} tasks, {per_user:,} per user, 50 per page\n")
    engine = create_engine(url)
    _seed(engine, users, per_user)
    user = f"page-user-{users // 2}"
    with UnitOfWork(engine) as uow:
        walked = [uow.tasks.list(user_id=user, limit=50)]
        while len(walked) < 200:
            walked.append(uow.tasks.list(user_id=user, limit=50, after=walked[-1][-1]))
    first_ms: list[float] = []
    last_ms: list[float] = []
    for _ in range(reps):
        with _timer(first_ms), UnitOfWork(engine) as uow:
            uow.tasks.list(user_id=user, limit=50)
        with _timer(last_ms), UnitOfWork(engine) as uow:
            page = uow.tasks.list(user_id=user, limit=50, after=walked[198][-1])
    assert [t.id for t in page] == [t.id for t in walked[199]]
    print("| page | median ms |")
    print("|---|---|")
    print(f"| 1 | {statistics.median(first_ms):.2f} |")
    print(f"| 200 (after=) | {statistics.median(last_ms):.2f} |")
    from persistence.statements import select_tasks

    last = walked[198][-1]
    statement = select_tasks(user, None, 50, (last.created_at, last.id))
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        plan = [row[0] for row in connection.execute(text(f"EXPLAIN {compiled}"))]
    print("\nEXPLAIN of page 200:\n")
    for line in plan:
        print(f"    {line}")
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print Markdown tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rtts", default="0,5,20,50", help="injected RTTs in ms")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per cell")
    parser.add_argument("--bulk-rows", type=int, default=1000)
    parser.add_argument("--page-rows", type=int, default=1_000_000, help="0 skips pages")
    args = parser.parse_args(argv)
    url = _bench_url()
    init_db(create_engine(url))
    print(f"# persistence benchmarks on {url.render_as_string(hide_password=True)}")
    rtts = [float(r) for r in args.rtts.split(",")]
    round_trip_table(url, rtts, args.reps)
    concurrency(url, rtts)
    bulk(url, args.bulk_rows, max(args.reps, 5))
    if args.page_rows:
        pages(url, args.page_rows, max(args.reps, 5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
