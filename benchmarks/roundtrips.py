"""Units of work through the latency proxy at several RTTs: median ms and round trips
counted by the proxy; and 200 concurrent async tasks on a pool of 10."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import URL

from benchmarks.common import USER, adispose, ensure_tasks, package, section, target, through
from benchmarks.implementations import (
    OPERATIONS,
    Ours,
    OursAsync,
    PlainSQLModel,
    RawPsycopg,
    mixed_async,
)
from benchmarks.proxy import LatencyProxy
from persistence import AsyncUnitOfWork, create_async_engine

IMPLEMENTATIONS: tuple[Any, ...] = (Ours, OursAsync, PlainSQLModel, RawPsycopg)
RAW = len(IMPLEMENTATIONS) - 1
LABELS = {
    "list": "only reads (one list)",
    "create": "create one task",
    "toggle": "toggle_complete one task",
    "mixed": "create + toggle + list",
}


def _measure(proxy: LatencyProxy, work: Callable[[], Any], reps: int) -> tuple[float, int]:
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


def table(url: URL, rtts: list[float], reps: int) -> None:
    section("Units of work: median ms and round trips counted by the proxy")
    ensure_tasks(url, USER)
    header = "| unit of work | RTT ms | " + " | ".join(i.name for i in IMPLEMENTATIONS)
    print(header + " | eff. RT (ours) | ours / raw |")
    print("|---" * (len(IMPLEMENTATIONS) + 4) + "|")
    with LatencyProxy(target(url)) as proxy:
        impls = [impl(through(url, proxy.port)) for impl in IMPLEMENTATIONS]
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
                        + f" | {effective} | {ratio} |",
                        flush=True,
                    )
        finally:
            for impl in impls:
                impl.close()


def concurrency(url: URL, rtts: list[float], tasks: int = 200, pool: int = 10) -> None:
    section(f"{tasks} concurrent tasks on one event loop, a pool of {pool}")
    print("Each task runs one unit of work: create + toggle_complete + list.\n")
    print("| RTT ms | wall s | units of work/s | round trips |")
    print("|---|---|---|---|")
    with LatencyProxy(target(url)) as proxy:
        proxied = package(through(url, proxy.port))

        async def run() -> float:
            engine = create_async_engine(proxied, pool_size=pool, max_overflow=0)

            async def one(n: int) -> None:
                async with AsyncUnitOfWork(engine) as uow:
                    await mixed_async(uow, f"{USER}-{n % 20}")

            await asyncio.gather(*(one(n) for n in range(pool)))  # open the pool
            proxy.reset_counts()
            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(tasks)))
            elapsed = time.perf_counter() - started
            await adispose(engine)
            return elapsed

        for rtt in rtts:
            proxy.rtt_ms = rtt
            elapsed = asyncio.run(run())
            print(
                f"| {rtt:g} | {elapsed:.2f} | {tasks / elapsed:,.0f} | "
                f"{proxy.round_trips} ({proxy.round_trips / tasks:.1f} a unit) |",
                flush=True,
            )
