"""`python -m benchmarks`: issue 10's targets measured side by side, plus round trips,
concurrency, bulk rows/s and keyset pages.

Runs against the server of TEST_DATABASE_URL (else DATABASE_URL, else the embedded
PostgreSQL), in a database `persistence_bench` that it creates and keeps (seeded rows
survive across runs). Every target figure is a ratio of this package to raw psycopg
measured in the same run, printed with its target and PASS/MISS; a summary ends the run.
`--only cpu,throughput` runs some sections only.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL

from benchmarks import (
    bulk,
    churn,
    coldstart,
    cpu,
    latency,
    memory,
    pages,
    replicas,
    roundtrips,
    throughput,
)
from benchmarks.common import bench_url, dispose, package, shown
from benchmarks.summary import print_summary


@dataclass(frozen=True)
class Section:
    help: str
    run: Callable[[Any, argparse.Namespace], None]
    needs_database: bool = True


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


SECTIONS: dict[str, Section] = {
    "cpu": Section(
        "callgrind instructions per unit of work (list, create, toggle, mixed)",
        lambda url, a: cpu.run(url, a.cpu_units, a.cpu_warm),
    ),
    "wall": Section(
        "mixed unit wall time at 1 ms injected RTT, interleaved runs",
        lambda url, a: latency.run(url, a.wall_reps, a.wall_rtt),
    ),
    "throughput": Section(
        "sync throughput at 1-16 threads vs psycopg_pool.ConnectionPool",
        lambda url, a: throughput.sync(url, _ints(a.threads), _windows(a)),
    ),
    "async-throughput": Section(
        "async throughput at 50 and 200 tasks vs psycopg_pool.AsyncConnectionPool",
        lambda url, a: throughput.run_async(url, _ints(a.tasks), _windows(a)),
    ),
    "connections": Section(
        "connections opened by the default pool under 200 async tasks / 50 threads",
        lambda url, a: churn.run(url, a.churn_seconds),
    ),
    "create-many": Section(
        "create_many of 100k rows vs the package's own SQL sent raw",
        lambda url, a: bulk.create_many_raw(url, a.create_many_rows, a.create_many_reps),
    ),
    "memory": Section(
        "bytes per row of listing 100k tasks vs raw fetchall (tracemalloc)",
        lambda url, a: memory.run(url, a.list_rows),
    ),
    "first-unit": Section(
        "round trips of a fresh process's first unit of work, plain and TLS + SCRAM",
        lambda url, a: coldstart.first_units(url, a.tls_url),
    ),
    "replicas": Section(
        "read throughput with one streaming replica vs none (private servers), causal reads",
        lambda url, a: replicas.run(
            a.replica_threads, throughput.Windows(a.replica_windows, a.replica_window)
        ),
        needs_database=False,
    ),
    "import": Section(
        "import time of `import persistence` and what it loads",
        lambda url, a: coldstart.imports(a.import_runs),
        needs_database=False,
    ),
    "roundtrips": Section(
        "units of work at several RTTs: median ms and round trips",
        lambda url, a: roundtrips.table(url, _floats(a.rtts), a.reps),
    ),
    "concurrency": Section(
        "200 concurrent async tasks on a pool of 10 at several RTTs",
        lambda url, a: roundtrips.concurrency(url, _floats(a.rtts)),
    ),
    "bulk": Section(
        "create_many of --bulk-rows vs plain SQLModel and a multi-row VALUES",
        lambda url, a: bulk.bulk(url, a.bulk_rows, max(a.reps, 5)),
    ),
    "pages": Section(
        "keyset pages on --page-rows seeded rows (0 skips)",
        lambda url, a: pages.run(url, a.page_rows, max(a.reps, 5)) if a.page_rows else None,
    ),
}


def _windows(args: argparse.Namespace) -> throughput.Windows:
    return throughput.Windows(args.windows, args.window)


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def _names(text: str | None, parser: argparse.ArgumentParser) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print Markdown tables, then the targets' summary."""
    sections_help = "; ".join(f"{name}: {s.help}" for name, s in SECTIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog=f"Sections, in the order they run: {sections_help}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", help="comma-separated sections to run (default: all)")
    parser.add_argument("--skip", help="comma-separated sections not to run")
    parser.add_argument("--rtts", default="0,5,20,50", help="injected RTTs in ms (roundtrips)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per cell (roundtrips)")
    parser.add_argument("--bulk-rows", type=int, default=1000)
    parser.add_argument("--page-rows", type=int, default=1_000_000, help="0 skips pages")
    parser.add_argument("--cpu-units", type=int, default=50, help="units per callgrind dump")
    parser.add_argument("--cpu-warm", type=int, default=10, help="warm-up units per operation")
    parser.add_argument("--wall-reps", type=int, default=300, help="runs per implementation")
    parser.add_argument("--wall-rtt", type=float, default=1.0, help="injected RTT in ms")
    parser.add_argument("--threads", default="1,2,4,8,16", help="thread counts (throughput)")
    parser.add_argument("--tasks", default="50,200", help="task counts (async-throughput)")
    parser.add_argument(
        "--windows",
        type=int,
        default=8,
        help="alternating windows per count, A B B A A B B A... (throughput sections; even)",
    )
    parser.add_argument(
        "--window", type=float, default=1.5, help="seconds per window (throughput sections)"
    )
    parser.add_argument("--replica-threads", type=int, default=8, help="threads (replicas)")
    parser.add_argument(
        "--replica-windows", type=int, default=4, help="A B B A windows (replicas; even)"
    )
    parser.add_argument(
        "--replica-window", type=float, default=2.0, help="seconds per window (replicas)"
    )
    parser.add_argument("--churn-seconds", type=float, default=10.0)
    parser.add_argument("--create-many-rows", type=int, default=100_000)
    parser.add_argument("--create-many-reps", type=int, default=3)
    parser.add_argument("--list-rows", type=int, default=100_000)
    parser.add_argument("--import-runs", type=int, default=5)
    parser.add_argument(
        "--tls-url",
        default=os.environ.get(coldstart.TLS_ENV),
        help=(
            f"a TLS + SCRAM server for first-unit (default: ${coldstart.TLS_ENV}, else a "
            "private TLS server started for the section)"
        ),
    )
    args = parser.parse_args(argv)
    for flag in ("windows", "replica_windows"):
        count = getattr(args, flag)
        if count < 2 or count % 2:
            parser.error(f"--{flag.replace('_', '-')} must be an even number ≥ 2, not {count}")
    chosen = _names(args.only, parser) or list(SECTIONS)
    skip = set(_names(args.skip, parser))
    chosen = [name for name in chosen if name not in skip]

    url: URL | None = None
    if any(SECTIONS[name].needs_database for name in chosen):
        from persistence import create_engine, init_db

        url = bench_url()
        engine = create_engine(package(url))
        init_db(engine)
        dispose(engine)
        print(f"# persistence benchmarks on {shown(url)}")
    else:
        print("# persistence benchmarks")
    print(f"\nsections: {', '.join(chosen)}; python {sys.version.split()[0]}")
    failed = []
    for name in chosen:
        try:
            SECTIONS[name].run(url, args)
        except Exception:
            # One broken section (the package is being rewritten) must not hide the others.
            failed.append(name)
            print(f"\n**section {name} failed:**\n\n```\n{traceback.format_exc()}```")
        sys.stdout.flush()
    print_summary()
    if failed:
        print(f"\n**sections that failed (their figures are missing above): {', '.join(failed)}**")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
