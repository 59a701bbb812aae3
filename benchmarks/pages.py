"""Keyset pages: page 200 costs what page 1 does, on 1M seeded rows (seeded once, kept)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import URL

from benchmarks.bulk import items
from benchmarks.common import capture_sql, count_tasks, dispose, libpq, package, section
from persistence import UnitOfWork, create_engine


def _seed(url: URL, engine: Any, users: int, per_user: int) -> None:
    if count_tasks(url, f"page-user-{users - 1}") >= per_user:
        return
    print(f"seeding {users * per_user:,} tasks ({users} users x {per_user:,})...", flush=True)
    started = time.perf_counter()
    for user in range(users):
        done = count_tasks(url, f"page-user-{user}")
        for start in range(done, per_user, 1000):
            with UnitOfWork(engine) as uow:
                batch = min(1000, per_user - start)
                uow.tasks.create_many(user_id=f"page-user-{user}", items=items(batch))
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        connection.execute("ANALYZE tasks")
    print(f"seeded in {time.perf_counter() - started:.0f} s")


@contextmanager
def _timer(samples: list[float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    samples.append((time.perf_counter() - started) * 1000)


def run(url: URL, total: int, reps: int) -> None:
    users, per_user = max(total // 10_000, 1), min(total, 10_000)
    section(f"Keyset pages: {users * per_user:,} tasks, {per_user:,} per user, 50 per page")
    engine = create_engine(package(url))
    _seed(url, engine, users, per_user)
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
    # The plan of the statement the package really sent, captured where psycopg gets it.
    with capture_sql() as sent, UnitOfWork(engine) as uow:
        uow.tasks.list(user_id=user, limit=50, after=walked[198][-1])
    dispose(engine)
    selects = [s for s in sent if s.query.lstrip().upper().startswith("SELECT")]
    if not selects:
        print("\n(no SELECT captured at psycopg's cursor: no EXPLAIN)")
        return
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        plan = [
            row[0] for row in connection.execute("EXPLAIN " + selects[-1].query, selects[-1].params)
        ]
    print("\nEXPLAIN of page 200 (the package's statement, its parameters bound):\n")
    for line in plan:
        print(f"    {line}")
