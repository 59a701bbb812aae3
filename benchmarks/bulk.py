"""Bulk create: rows/s of `create_many`, against plain SQLModel and raw psycopg.

`create_many_raw` compares the package with *its own SQL sent raw*: the statements are
captured where psycopg receives them (`capture_sql`, during the package's own untimed
warm-up call), so the comparison follows whatever the package sends, whatever builds it.
They are replayed on one psycopg connection in a transaction, every result fetched.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import sqlmodel
from sqlalchemy import URL
from sqlmodel import Session

from benchmarks.common import (
    Sent,
    capture_sql,
    delete_tasks,
    dispose,
    libpq,
    package,
    replay,
    section,
    skipped,
)
from benchmarks.summary import at_least, not_measured, print_figures
from persistence import Task, UnitOfWork, create_engine

TARGET = 0.8
BULK_USER = "bulk"
BIG_USER = "bulk-100k"


def items(n: int) -> list[dict[str, Any]]:
    return [{"title": f"bulk task {i}", "description": None} for i in range(n)]


def bulk(url: URL, rows: int, reps: int) -> None:
    section(f"Bulk create: {rows} tasks per unit of work, rows/s (median of {reps})")
    batch = items(rows)
    engine = create_engine(package(url))
    plain = sqlmodel.create_engine(url)
    raw = psycopg.connect(libpq(url), autocommit=True, prepare_threshold=None)

    def ours() -> None:
        with UnitOfWork(engine) as uow:
            uow.tasks.create_many(user_id=BULK_USER, items=batch)

    def plain_sqlmodel() -> None:
        from persistence.models import TaskCreate

        with Session(plain) as session:
            tasks = [
                Task.model_validate(TaskCreate.model_validate({**i, "user_id": BULK_USER}))
                for i in batch
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
        for item in batch:
            params += [BULK_USER, item["title"], item["description"]]
        with raw.transaction():
            raw.execute(statement, params).fetchall()

    results = {}
    for name, work in (
        ("persistence", ours),
        ("plain SQLModel", plain_sqlmodel),
        ("raw psycopg (multi-row VALUES)", raw_psycopg),
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
        f"{ours_rate / results['raw psycopg (multi-row VALUES)'] * 100:.0f}% of raw psycopg"
    )
    delete_tasks(url, BULK_USER)
    dispose(engine)
    plain.dispose()
    raw.close()


def _statements_of(sent: Sequence[Sent], rows: int) -> list[Sent]:
    """What the package sent for the insert: everything but transaction control, provided
    the rows' values are in it."""
    statements = [s for s in sent if not s.transaction_control]
    return statements if sum(s.size for s in statements) >= rows else []


def _compiled_fallback(rows: list[dict[str, Any]]) -> list[Sent]:
    # Only if nothing went through psycopg's cursors: the package's compiled statement,
    # with its parameters in order (user, titles, descriptions).
    from persistence import statements

    built = statements.insert_tasks()
    titles = [r["title"] for r in rows]
    descriptions = [r.get("description") for r in rows]
    return [Sent("execute", built.sql, (BIG_USER, titles, descriptions))]


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def create_many_raw(url: URL, rows: int = 100_000, reps: int = 3) -> None:
    name = f"create_many {rows:,} rows/s, persistence / its own SQL sent raw"
    section(f"create_many of {rows:,} rows: persistence / its own SQL sent raw")
    batch = [{"title": f"big task {i}"} for i in range(rows)]
    engine = create_engine(package(url))
    raw = psycopg.connect(libpq(url), autocommit=True, prepare_threshold=None)

    def ours() -> None:
        with UnitOfWork(engine) as uow:
            created = uow.tasks.create_many(user_id=BIG_USER, items=batch)
        assert len(created) == rows

    try:
        with UnitOfWork(engine) as uow:  # the first connect's own queries are not the insert's
            uow.tasks.create_many(user_id=BIG_USER, items=batch[:10])
        delete_tasks(url, BIG_USER)
        with capture_sql() as sent:
            ours()  # the warm-up, and the statements to replay
        delete_tasks(url, BIG_USER)
        statements = _statements_of(sent, rows)
        how = "captured at psycopg's cursor during the package's warm-up call"
        if not statements:
            try:
                statements = _compiled_fallback(batch)
                how = "compiled from persistence.statements.insert_tasks (nothing captured)"
            except Exception as exc:
                skipped(f"{name}: could not capture the package's SQL ({exc!r})")
                not_measured(name, f"≥ {TARGET}", "could not capture the package's SQL")
                return
        print(f"raw replays {len(statements)} statement(s) ({how}); the first:\n")
        text = " ".join(statements[0].query.split())
        print(f"    {text[:400]}{' ...' if len(text) > 400 else ''}\n")

        def raw_replay() -> None:
            fetched = replay(raw, statements)
            # Its own statements may return a row or two of their own (ids, positions).
            assert rows <= fetched <= rows + len(statements) * 2, (
                f"the replay returned {fetched} rows"
            )

        raw_replay()  # warm, and check that it really inserts the rows
        delete_tasks(url, BIG_USER)
        times: dict[str, list[float]] = {"ours": [], "raw": []}
        for rep in range(reps):
            order = (("ours", ours), ("raw", raw_replay))
            for key, work in order if rep % 2 == 0 else order[::-1]:
                times[key].append(_timed(work))
                delete_tasks(url, BIG_USER)  # untimed: every run starts from the same table
    finally:
        dispose(engine)
        raw.close()
    mine = rows / statistics.median(times["ours"])
    theirs = rows / statistics.median(times["raw"])
    print(f"| implementation | rows/s (median of {reps}, runs alternating) |")
    print("|---|---|")
    print(f"| persistence `create_many` | {mine:,.0f} |")
    print(f"| its SQL sent raw (psycopg, one transaction, fetchall) | {theirs:,.0f} |")
    print()
    print_figures([at_least(name, mine / theirs, TARGET)])
