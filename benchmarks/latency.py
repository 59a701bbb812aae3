"""Wall time of the mixed unit of work at 1 ms injected RTT, package / raw psycopg pipeline.

The proxy runs in a process of its own (no GIL shared with the client). The
implementations alternate run by run (A B, B A, ...) so that the machine's drift hits
both; the figure is the ratio of the medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from sqlalchemy import URL

from benchmarks.common import USER, ensure_tasks, section, target, through
from benchmarks.implementations import Ours, OursAsync, RawPsycopg, RawPsycopgAsync
from benchmarks.proxy_process import ProxyProcess
from benchmarks.summary import at_most, print_figures

TARGET = 1.15


def _interleaved(a: Any, b: Any, reps: int) -> tuple[list[float], list[float]]:
    for impl in (a, b):
        for _ in range(5):
            impl.mixed()
    times: dict[int, list[float]] = {id(a): [], id(b): []}
    for rep in range(reps):
        for impl in (a, b) if rep % 2 == 0 else (b, a):
            started = time.perf_counter()
            impl.mixed()
            times[id(impl)].append((time.perf_counter() - started) * 1000)
    return times[id(a)], times[id(b)]


def _round_trips(proxy: ProxyProcess, impl: Any) -> int:
    proxy.reset_counts()
    impl.mixed()
    return proxy.counts()[0]


def run(url: URL, reps: int = 300, rtt_ms: float = 1.0) -> None:
    section(f"Mixed unit of work at {rtt_ms:g} ms injected RTT: wall time, {reps} runs each")
    print(
        "create + toggle_complete + list 50 in one unit of work, through the latency proxy "
        "(in its own process); runs alternate between the two implementations.\n"
    )
    ensure_tasks(url, USER)
    print("| implementation | median ms | p10 ms | p90 ms | round trips |")
    print("|---|---|---|---|---|")
    with ProxyProcess(target(url), rtt_ms=rtt_ms) as proxy:
        proxied = through(url, proxy.port)
        rows = []
        for ours_cls, raw_cls in ((Ours, RawPsycopg), (OursAsync, RawPsycopgAsync)):
            ours, raw = ours_cls(proxied), raw_cls(proxied)
            try:
                mine, theirs = _interleaved(ours, raw, reps)
                trips = (_round_trips(proxy, ours), _round_trips(proxy, raw))
            finally:
                ours.close()
                raw.close()
            for impl, samples, rt in ((ours, mine, trips[0]), (raw, theirs, trips[1])):
                deciles = statistics.quantiles(samples, n=10)
                print(
                    f"| {impl.name} | {statistics.median(samples):.2f} | {deciles[0]:.2f} | "
                    f"{deciles[-1]:.2f} | {rt} |",
                    flush=True,
                )
            rows.append((ours.name, raw.name, statistics.median(mine) / statistics.median(theirs)))
    (sync_name, sync_raw, sync_ratio), (async_name, async_raw, async_ratio) = rows
    print(f"\nFor context (no target): {async_name} / {async_raw} = {async_ratio:.2f}.\n")
    figure = at_most(
        f"mixed unit wall time at {rtt_ms:g} ms RTT, {sync_name} / {sync_raw} pipeline",
        sync_ratio,
        TARGET,
    )
    print_figures([figure])
