"""Connections the default pool opens under sustained load: at most its maximum, or churn.

The engines are built with the package's defaults (`create_async_engine(url)`,
`create_engine(url)`) and reach the server through the latency proxy (its own process,
1 ms RTT so that the pool is really contended), which counts every connection opened,
from the engine's first use to the end of the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from sqlalchemy import URL

from benchmarks.common import (
    adispose,
    delete_tasks,
    dispose,
    ensure_tasks,
    package,
    pool_maximum,
    section,
    target,
    through,
)
from benchmarks.implementations import mixed, mixed_async
from benchmarks.proxy_process import ProxyProcess
from benchmarks.summary import at_most, print_figures
from persistence import AsyncUnitOfWork, UnitOfWork, create_async_engine, create_engine

USERS = 20


async def _async_load(url: URL, tasks: int, seconds: float) -> int:
    engine = create_async_engine(package(url))
    stop = asyncio.Event()
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        while not stop.is_set():
            async with AsyncUnitOfWork(engine) as uow:
                await mixed_async(uow, f"churn-{n % USERS}")
            done += 1

    running = [asyncio.ensure_future(worker(n)) for n in range(tasks)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    stop.set()
    try:
        await asyncio.gather(*running)
    finally:
        await adispose(engine)
    return done


def _sync_load(url: URL, threads: int, seconds: float) -> int:
    engine = create_engine(package(url))
    stop = threading.Event()
    done = [0] * threads
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            while not stop.is_set():
                with UnitOfWork(engine) as uow:
                    mixed(uow, f"churn-{n % USERS}")
                done[n] += 1
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    dispose(engine)
    if failures:
        raise failures[0]
    return sum(done)


def run(
    url: URL, seconds: float = 10.0, tasks: int = 200, threads: int = 50, rtt_ms: float = 1.0
) -> None:
    maximum = pool_maximum()
    section(f"Connections opened under load, default pool (maximum {maximum})")
    print(
        f"Each worker loops create + toggle_complete + list 50 for {seconds:g} s on an "
        f"engine with the package's default pool settings, through the proxy at "
        f"{rtt_ms:g} ms RTT, which counts every connection opened (including the pool's "
        "first ones).\n"
    )
    for n in range(USERS):
        ensure_tasks(url, f"churn-{n}")
    print("| load | units of work | connections opened | pool maximum |")
    print("|---|---|---|---|")
    figures = []
    with ProxyProcess(target(url), rtt_ms=rtt_ms) as proxy:
        proxied = through(url, proxy.port)
        proxy.reset_counts()
        units = asyncio.run(_async_load(proxied, tasks, seconds))
        opened = proxy.counts()[1]
        print(
            f"| {tasks} async tasks, `create_async_engine(url)` | {units:,} | {opened} | "
            f"{maximum} |",
            flush=True,
        )
        figures.append(
            at_most(
                f"connections opened during {seconds:g} s of {tasks} async tasks",
                opened,
                maximum,
                "{:.0f}",
            )
        )
        proxy.reset_counts()
        units = _sync_load(proxied, threads, seconds)
        opened = proxy.counts()[1]
        print(
            f"| {threads} threads, `create_engine(url)` | {units:,} | {opened} | {maximum} |",
            flush=True,
        )
        figures.append(
            at_most(
                f"connections opened during {seconds:g} s of {threads} threads (sync)",
                opened,
                maximum,
                "{:.0f}",
            )
        )
    delete_tasks(url, "churn-%")
    print()
    print_figures(figures)
