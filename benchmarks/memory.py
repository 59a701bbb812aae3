"""Listing 100k tasks: bytes per row (tracemalloc peak), package / raw `fetchall`.

tracemalloc traces Python's allocators: the peak while the call runs, less what was
allocated before it, divided by the rows returned. libpq's own result buffer is C memory
that it does not see, on both sides alike. The rows are seeded once in the bench database
and kept across runs. If the package caps `limit`, its streaming iterator (detected by
name) collected into a list is measured instead, else keyset pages.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from sqlalchemy import URL

from benchmarks.common import LIST_ALL, count_tasks, dispose, libpq, package, section
from benchmarks.summary import at_most, print_figures
from persistence import PersistenceError, UnitOfWork, create_engine

TARGET = 1.5
USER = "list-100k"
STREAM_NAMES = ("stream", "iterate", "iter_all", "walk", "scan", "iter", "all")
"""Names a streaming iterator over all of a user's tasks may have on `uow.tasks`."""


def _seed(url: URL, engine: Any, rows: int) -> None:
    have = count_tasks(url, USER)
    if have >= rows:
        return
    print(f"seeding {rows - have:,} tasks for {USER!r} (once; kept in the bench database)...")
    for start in range(have, rows, 10_000):
        with UnitOfWork(engine) as uow:
            batch = [{"title": f"listed task {i}"} for i in range(start, min(start + 10_000, rows))]
            uow.tasks.create_many(user_id=USER, items=batch)
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        connection.execute("ANALYZE tasks")


def _peak_per_row(work: Callable[[], list[Any]]) -> tuple[float, int]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = work()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = len(result)
    del result
    return (peak - before) / max(rows, 1), rows


def _walk_peak(engine: Any) -> tuple[int, int]:
    """(tracemalloc peak bytes, rows seen) walking the streaming iterator, keeping nothing."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        seen = 0
        with UnitOfWork(engine) as uow:
            found = _stream_method(uow)
            assert found is not None
            for chunk in found[1](user_id=USER):
                seen += len(chunk) if isinstance(chunk, list | tuple) else 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - before, seen


def _stream_method(uow: UnitOfWork) -> tuple[str, Callable[..., Iterable[Any]]] | None:
    for name in STREAM_NAMES:
        method = getattr(uow.tasks, name, None)
        if callable(method):
            return name, method
    return None


def _flatten(chunks: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        if isinstance(chunk, list | tuple):
            out.extend(chunk)
        else:
            out.append(chunk)
    return out


def run(url: URL, rows: int = 100_000) -> None:
    section(f"Listing {rows:,} tasks of one user: bytes per row (tracemalloc peak)")
    engine = create_engine(package(url))
    _seed(url, engine, rows)
    raw = psycopg.connect(libpq(url), autocommit=True, prepare_threshold=None)

    def fetchall() -> list[Any]:
        return raw.execute(LIST_ALL, (USER,)).fetchall()

    def unbounded() -> list[Any]:
        with UnitOfWork(engine) as uow:
            return uow.tasks.list(user_id=USER, limit=None)

    def streamed() -> list[Any]:
        with UnitOfWork(engine) as uow:
            found = _stream_method(uow)
            assert found is not None
            return _flatten(found[1](user_id=USER))

    def paged(size: int = 1000) -> list[Any]:
        out: list[Any] = []
        with UnitOfWork(engine) as uow:
            page = uow.tasks.list(user_id=USER, limit=size)
            while page:
                out.extend(page)
                page = uow.tasks.list(user_id=USER, limit=size, after=page[-1])
        return out

    with UnitOfWork(engine) as uow:
        stream = _stream_method(uow)
    candidates: list[tuple[str, Callable[[], list[Any]]]] = []
    try:
        unbounded()
        candidates.append(("`list(limit=None)`", unbounded))
    except (PersistenceError, ValueError, TypeError) as exc:
        print(f"`list(limit=None)` refused ({type(exc).__name__}): measuring the alternatives\n")
    if stream is not None:
        candidates.append((f"`uow.tasks.{stream[0]}(user_id=...)` collected", streamed))
    if not candidates:
        candidates.append(("`list(limit=1000, after=...)` pages collected", paged))

    try:
        fetchall()
        raw_per_row, raw_rows = _peak_per_row(fetchall)
        print("| implementation | rows | bytes per row | ratio to raw | ms (no tracing) |")
        print("|---|---|---|---|---|")
        raw_ms = _median_ms(fetchall)
        print(
            f"| raw psycopg `fetchall()` | {raw_rows:,} | {raw_per_row:,.0f} | 1.00 | "
            f"{raw_ms:,.0f} |",
            flush=True,
        )
        figures = []
        for label, work in candidates:
            work()
            per_row, got = _peak_per_row(work)
            ms = _median_ms(work)
            print(
                f"| persistence {label} | {got:,} | {per_row:,.0f} | "
                f"{per_row / raw_per_row:.2f} | {ms:,.0f} ({ms / raw_ms:.1f}x) |",
                flush=True,
            )
            figures.append((label, per_row / raw_per_row, got))
    finally:
        raw.close()
        dispose(engine)
        if stream is not None:
            walked_peak = _walk_peak(engine)
            print(
                f"| persistence `uow.tasks.{stream[0]}` walked, nothing kept | "
                f"{walked_peak[1]:,} | peak {walked_peak[0] / 1024:,.0f} KB in all | | |"
            )
    label, ratio, got = figures[0]
    if got != raw_rows:
        print(f"\n**{label} returned {got:,} rows, raw {raw_rows:,}**")
    print()
    print_figures(
        [
            at_most(
                f"list of {rows // 1000}k tasks, bytes per row, persistence {label} / raw fetchall",
                ratio,
                TARGET,
            )
        ]
    )


def _median_ms(work: Callable[[], Any], reps: int = 3) -> float:
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)
