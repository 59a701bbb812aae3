"""Units of work per second under concurrency, package / psycopg_pool of the same size.

Sync: N threads each loop the mixed unit of work on `create_engine(url, pool_size=N,
max_overflow=0)`, against the same statements sent raw on a
`psycopg_pool.ConnectionPool(min_size=N, max_size=N)`. Async: N tasks on one event loop,
`AsyncUnitOfWork` on `create_async_engine(url, pool_size=10, max_overflow=0)` against
`psycopg_pool.AsyncConnectionPool(min_size=10, max_size=10)`. Directly against the
server (no proxy, 0 ms RTT): this is client CPU and pool behaviour. Each implementation
runs two half-windows in the order A B B A, so drift of the shared machine hits both.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy import URL

from benchmarks.common import (
    adispose,
    delete_tasks,
    dispose,
    ensure_tasks,
    libpq,
    package,
    section,
)
from benchmarks.implementations import mixed, mixed_async, raw_mixed, raw_mixed_async
from benchmarks.summary import at_least, print_figures
from persistence import AsyncUnitOfWork, UnitOfWork, create_async_engine, create_engine

TARGET = 0.8
_RAW_KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}

Unit = Callable[[str], None]


def ensure_users(url: URL, users: int) -> None:
    """Give each user `tp-0` ... a full 50-task page before anything is measured."""
    for n in range(users):
        ensure_tasks(url, f"tp-{n}")


def _phase(unit: Unit, threads: int, seconds: float) -> tuple[int, float]:
    """Run `unit` in `threads` threads for about `seconds`; (units done, elapsed s)."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    done = [0] * threads
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        user = f"tp-{n}"
        try:
            unit(user)  # untimed: the pool's connection is open before the window
            start.wait()
            while not stop.is_set():
                unit(user)
                done[n] += 1
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return sum(done), elapsed


def _abba(
    a: Callable[[float], tuple[int, float]], b: Callable[[float], tuple[int, float]], seconds: float
) -> tuple[float, float]:
    totals = {"a": [0, 0.0], "b": [0, 0.0]}
    for key, run in (("a", a), ("b", b), ("b", b), ("a", a)):
        units, elapsed = run(seconds / 2)
        totals[key][0] += units
        totals[key][1] += elapsed
    return totals["a"][0] / totals["a"][1], totals["b"][0] / totals["b"][1]


def sync(url: URL, counts: list[int], seconds: float = 3.0) -> None:
    section("Sync throughput: mixed units of work per second, N threads")
    print(
        f"Each thread loops create + toggle_complete + list 50 for {seconds:g} s per "
        "implementation (A B B A half-windows). **Directly against the server, no proxy, "
        "0 ms RTT.** persistence: `create_engine(url, pool_size=N, max_overflow=0)`; "
        "raw: `psycopg_pool.ConnectionPool(min_size=N, max_size=N)`, the same statements.\n"
    )
    ensure_users(url, max(counts))
    print("| threads | persistence units/s | psycopg pool units/s | ratio |")
    print("|---|---|---|---|")
    figures = []
    for n in counts:
        engine = create_engine(package(url), pool_size=n, max_overflow=0)
        pool = ConnectionPool(libpq(url), min_size=n, max_size=n, kwargs=_RAW_KWARGS, open=True)
        pool.wait()

        def ours(user: str, engine: Any = engine) -> None:
            with UnitOfWork(engine) as uow:
                mixed(uow, user)

        def raw(user: str, pool: ConnectionPool[Any] = pool) -> None:
            with pool.connection() as connection:
                raw_mixed(connection, user)

        try:
            mine, theirs = _abba(
                lambda s, ours=ours, n=n: _phase(ours, n, s),
                lambda s, raw=raw, n=n: _phase(raw, n, s),
                seconds,
            )
        finally:
            dispose(engine)
            pool.close()
        print(f"| {n} | {mine:,.0f} | {theirs:,.0f} | {mine / theirs:.2f} |", flush=True)
        figures.append(
            at_least(
                f"sync throughput, {n} thread{'s' if n > 1 else ''}, "
                "persistence / psycopg ConnectionPool",
                mine / theirs,
                TARGET,
            )
        )
    delete_tasks(url, "tp-%")
    print()
    print_figures(figures)


AsyncUnit = Callable[[str], Awaitable[None]]


async def _async_phase(unit: AsyncUnit, tasks: int, seconds: float) -> tuple[int, float]:
    stop = asyncio.Event()
    done = [0] * tasks

    async def worker(n: int) -> None:
        user = f"tp-{n % 20}"
        while not stop.is_set():
            await unit(user)
            done[n] += 1

    await asyncio.gather(*(unit(f"tp-{n}") for n in range(10)))  # open the pools
    started = time.perf_counter()
    running = [asyncio.ensure_future(worker(n)) for n in range(tasks)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    stop.set()
    await asyncio.gather(*running)
    return sum(done), time.perf_counter() - started


async def _async_pair(url: URL, tasks: int, seconds: float, pool_size: int) -> tuple[float, float]:
    engine = create_async_engine(package(url), pool_size=pool_size, max_overflow=0)
    pool = AsyncConnectionPool(
        libpq(url), min_size=pool_size, max_size=pool_size, kwargs=_RAW_KWARGS, open=False
    )
    await pool.open()
    await pool.wait()

    async def ours(user: str) -> None:
        async with AsyncUnitOfWork(engine) as uow:
            await mixed_async(uow, user)

    async def raw(user: str) -> None:
        async with pool.connection() as connection:
            await raw_mixed_async(connection, user)

    totals = {"a": [0, 0.0], "b": [0, 0.0]}
    try:
        for key, unit in (("a", ours), ("b", raw), ("b", raw), ("a", ours)):
            units, elapsed = await _async_phase(unit, tasks, seconds / 2)
            totals[key][0] += units
            totals[key][1] += elapsed
    finally:
        await adispose(engine)
        await pool.close()
    return totals["a"][0] / totals["a"][1], totals["b"][0] / totals["b"][1]


def run_async(url: URL, counts: list[int], seconds: float = 3.0, pool_size: int = 10) -> None:
    section(f"Async throughput: mixed units of work per second, N tasks, a pool of {pool_size}")
    print(
        f"N tasks on one event loop each loop create + toggle_complete + list 50 for "
        f"{seconds:g} s per implementation (A B B A half-windows). **Directly against the "
        f"server, no proxy, 0 ms RTT.** persistence: `AsyncUnitOfWork` on "
        f"`create_async_engine(url, pool_size={pool_size}, max_overflow=0)`; raw: "
        f"`psycopg_pool.AsyncConnectionPool(min_size={pool_size}, max_size={pool_size})`.\n"
    )
    ensure_users(url, 20)
    print("| tasks | persistence units/s | psycopg async pool units/s | ratio |")
    print("|---|---|---|---|")
    figures = []
    for n in counts:
        mine, theirs = asyncio.run(_async_pair(url, n, seconds, pool_size))
        print(f"| {n} | {mine:,.0f} | {theirs:,.0f} | {mine / theirs:.2f} |", flush=True)
        figures.append(
            at_least(
                f"async throughput, {n} tasks, persistence / psycopg AsyncConnectionPool",
                mine / theirs,
                TARGET,
            )
        )
    delete_tasks(url, "tp-%")
    print()
    print_figures(figures)
