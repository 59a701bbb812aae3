"""Units of work per second under concurrency, package / psycopg_pool of the same size.

Sync: N threads each loop the mixed unit of work on `create_engine(url, pool_size=N,
max_overflow=0)`, against the same statements sent raw on a
`psycopg_pool.ConnectionPool(min_size=N, max_size=N)`. Async: N tasks on one event loop,
`AsyncUnitOfWork` on `create_async_engine(url, pool_size=10, max_overflow=0)` against
`psycopg_pool.AsyncConnectionPool(min_size=10, max_size=10)`. Directly against the
server (no proxy, 0 ms RTT): this is client CPU and pool behaviour. The implementations
take turns in short windows, A B B A A B B A by default (`Windows`), so that drift of
the shared, loaded machine hits both alike; the ratio is of the units summed over all
windows (each side's units ÷ its summed seconds), and the spread of the per-pair ratios
is printed beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
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


def phase(
    unit: Unit,
    threads: int,
    seconds: float,
    prefix: str = "tp",
    before: Callable[[], None] | None = None,
) -> tuple[int, float]:
    """Run `unit` in `threads` threads for about `seconds`, thread n as user `{prefix}-{n}`;
    (units done, elapsed s). Each thread's first, untimed unit runs before `before` is
    called, and every counted unit after it. The first failure of a thread is raised."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1, action=before)
    done = [0] * threads
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        user = f"{prefix}-{n}"
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


@dataclass(frozen=True)
class Windows:
    """How two implementations take turns: `count` windows of `seconds` each, in pairs
    ordered A B, B A, A B, ... (A B B A A B B A for 8)."""

    count: int = 8
    seconds: float = 1.5

    def __post_init__(self) -> None:
        if self.count < 2 or self.count % 2:
            raise ValueError(f"--windows must be an even number ≥ 2, got {self.count}")

    def order(self) -> Iterator[tuple[int, str]]:
        """(pair number, "a" or "b") for each window, in the order they run."""
        for pair in range(self.count // 2):
            for key in "ab" if pair % 2 == 0 else "ba":
                yield pair, key

    def describe(self) -> str:
        pattern = " ".join(key.upper() for _, key in self.order())
        return f"{self.count} windows of {self.seconds:g} s, {pattern}"


@dataclass
class Tally:
    """Units and seconds of each side, in total and per pair of windows."""

    units: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    seconds: dict[str, float] = field(default_factory=lambda: {"a": 0.0, "b": 0.0})
    pairs: dict[int, dict[str, float]] = field(default_factory=dict)

    def add(self, pair: int, key: str, units: int, elapsed: float) -> None:
        self.units[key] += units
        self.seconds[key] += elapsed
        self.pairs.setdefault(pair, {})[key] = units / elapsed

    def rate(self, key: str) -> float:
        return self.units[key] / self.seconds[key]

    @property
    def ratio(self) -> float:
        """A's rate over B's, from the units summed over every window."""
        return self.rate("a") / self.rate("b")

    def spread(self) -> str:
        """The per-pair ratios: median, min-max."""
        ratios = [rates["a"] / rates["b"] for rates in self.pairs.values() if rates["b"]]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def alternate(
    a: Callable[[float], tuple[int, float]],
    b: Callable[[float], tuple[int, float]],
    windows: Windows,
) -> Tally:
    tally = Tally()
    for pair, key in windows.order():
        units, elapsed = (a if key == "a" else b)(windows.seconds)
        tally.add(pair, key, units, elapsed)
    return tally


def sync(url: URL, counts: list[int], windows: Windows | None = None) -> None:
    windows = windows or Windows()
    section("Sync throughput: mixed units of work per second, N threads")
    print(
        f"Each thread loops create + toggle_complete + list 50; the implementations take "
        f"turns ({windows.describe()}). **Directly against the server, no proxy, 0 ms "
        "RTT.** persistence: `create_engine(url, pool_size=N, max_overflow=0)`; raw: "
        "`psycopg_pool.ConnectionPool(min_size=N, max_size=N)`, the same statements. "
        "Units/s and the ratio: units summed over all of a side's windows ÷ its summed "
        "seconds; per-pair ratios: the median (min-max) of each A B pair's ratio.\n"
    )
    ensure_users(url, max(counts))
    print("| threads | persistence units/s | psycopg pool units/s | ratio | per-pair ratios |")
    print("|---|---|---|---|---|")
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
            tally = alternate(
                lambda s, ours=ours, n=n: phase(ours, n, s),
                lambda s, raw=raw, n=n: phase(raw, n, s),
                windows,
            )
        finally:
            dispose(engine)
            pool.close()
        _row(n, tally)
        figures.append(
            at_least(
                f"sync throughput, {n} thread{'s' if n > 1 else ''}, "
                "persistence / psycopg ConnectionPool",
                tally.ratio,
                TARGET,
            )
        )
    delete_tasks(url, "tp-%")
    print()
    print_figures(figures)


def _row(n: int, tally: Tally) -> None:
    print(
        f"| {n} | {tally.rate('a'):,.0f} | {tally.rate('b'):,.0f} | {tally.ratio:.2f} | "
        f"{tally.spread()} |",
        flush=True,
    )


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


async def _async_pair(url: URL, tasks: int, windows: Windows, pool_size: int) -> Tally:
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

    tally = Tally()
    try:
        for pair, key in windows.order():
            unit = ours if key == "a" else raw
            units, elapsed = await _async_phase(unit, tasks, windows.seconds)
            tally.add(pair, key, units, elapsed)
    finally:
        await adispose(engine)
        await pool.close()
    return tally


def run_async(
    url: URL, counts: list[int], windows: Windows | None = None, pool_size: int = 10
) -> None:
    windows = windows or Windows()
    section(f"Async throughput: mixed units of work per second, N tasks, a pool of {pool_size}")
    print(
        f"N tasks on one event loop each loop create + toggle_complete + list 50; the "
        f"implementations take turns ({windows.describe()}). **Directly against the "
        f"server, no proxy, 0 ms RTT.** persistence: `AsyncUnitOfWork` on "
        f"`create_async_engine(url, pool_size={pool_size}, max_overflow=0)`; raw: "
        f"`psycopg_pool.AsyncConnectionPool(min_size={pool_size}, max_size={pool_size})`. "
        "Units/s and the ratio: summed over all of a side's windows; per-pair ratios: "
        "median (min-max).\n"
    )
    ensure_users(url, 20)
    print("| tasks | persistence units/s | psycopg async pool units/s | ratio | per-pair ratios |")
    print("|---|---|---|---|---|")
    figures = []
    for n in counts:
        tally = asyncio.run(_async_pair(url, n, windows, pool_size))
        _row(n, tally)
        figures.append(
            at_least(
                f"async throughput, {n} tasks, persistence / psycopg AsyncConnectionPool",
                tally.ratio,
                TARGET,
            )
        )
    delete_tasks(url, "tp-%")
    print()
    print_figures(figures)
