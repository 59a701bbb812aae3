"""Read throughput with one streaming replica against none (issue 12), on private servers.

A private primary (`tests.servers.LocalServer`, `wal_level=replica`) and a hot standby
streaming from it (`primary.start_replica()`, `pg_basebackup -R`) are started for the
section and stopped at its end; the machine's own server is not used. N threads each loop
`with UnitOfWork(engine, read_only=True) as uow: uow.tasks.list(user_id=..., limit=50)`,
(A) on an engine with no read URL, (B) on one whose settings have
`read_urls=(replica.url(),)`, in alternating windows A B B A. Then a row with causal
tokens: each unit writes on the primary (`create`) and reads with
`UnitOfWork(read_only=True, after=uow.causal_token)`.

Where the reads were served is counted on the servers, not guessed: both run
`pg_stat_statements`, and each window's increase of the `calls` of the package's list
statement (`SELECT ... FROM tasks ...`) on each server is read right before and after the
counted units; a unit's read was served by the replica unless the primary ran its list.
Both servers and the client share this machine's cores, so this is no
figure of what a replica on its own compute adds; it is printed for information.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import dispose, section, skipped
from benchmarks.summary import Figure, information, not_measured, print_figures
from benchmarks.throughput import Windows, phase
from persistence import UnitOfWork, create_engine, init_db, load_settings

PREFIX = "rp"
TASKS_PER_USER = 50
CATCH_UP_SECONDS = 120.0  # generous: a loaded 2-core machine
_LIST_CALLS = (
    "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements "
    "WHERE query ILIKE 'SELECT %FROM tasks%'"
)
_SERVER_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "4",
    # The replica reports its replay position often: a causal read finds it sooner.
    "wal_receiver_status_interval": "1s",
}


@dataclass
class Served:
    """Units counted by the client, and list statements seen by each server."""

    units: int = 0
    seconds: float = 0.0
    primary: int = 0
    replica: int = 0

    def add(self, units: int, seconds: float, primary: int, replica: int) -> None:
        self.units += units
        self.seconds += seconds
        self.primary += primary
        self.replica += replica

    @property
    def rate(self) -> float:
        return self.units / self.seconds

    @property
    def on_replica(self) -> int:
        """Units whose read the replica served. Each unit keeps one list result; the
        primary runs a list only for a unit it serves, while a replica that turns out to
        be behind a unit's token has run the list already (its check rides in the same
        pipeline) before the unit reads again on the primary."""
        return self.units - self.primary

    @property
    def discarded(self) -> int:
        """Lists the replica ran for units it then handed to the primary (behind the token)."""
        return self.replica - self.on_replica

    @property
    def replica_share(self) -> float | None:
        return self.on_replica / self.units if self.units else None


@dataclass
class Cluster:
    primary: Any  # tests.servers.LocalServer
    replica: Any
    counting: bool
    """Whether both servers run pg_stat_statements (else no count of where reads went)."""
    _links: dict[str, psycopg.Connection[Any]] = field(default_factory=dict)

    def list_calls(self) -> tuple[int, int]:
        """The list statement's calls so far: (on the primary, on the replica)."""
        if not self.counting:
            return 0, 0
        counts = []
        for name, server in (("primary", self.primary), ("replica", self.replica)):
            link = self._links.get(name)
            if link is None:
                link = self._links[name] = psycopg.connect(server.url(), autocommit=True)
            row = link.execute(_LIST_CALLS).fetchone()
            counts.append(int(row[0]) if row else 0)
        return counts[0], counts[1]

    def caught_up(self) -> None:
        """Wait (bounded) until the replica has replayed all that the primary has written."""
        target = self.primary.execute_admin("SELECT pg_current_wal_lsn()::text")[0][0]
        waited = threading.Event()
        for _ in range(int(CATCH_UP_SECONDS / 0.05)):
            done = self.replica.execute_admin(
                f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            )[0][0]
            if done:
                return
            waited.wait(0.05)
        raise RuntimeError(f"the replica did not replay up to {target} in {CATCH_UP_SECONDS} s")

    def close(self) -> None:
        for link in self._links.values():
            link.close()


def _has_pg_stat_statements(bin_dir: Path) -> bool:
    """Whether the build in `bin_dir` ships pg_stat_statements (its lib folder, or the one
    its pg_config names)."""
    folders = [bin_dir.parent / "lib"]
    if (bin_dir / "pg_config").exists():
        done = subprocess.run(
            [str(bin_dir / "pg_config"), "--pkglibdir"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.stdout.strip():
            folders.append(Path(done.stdout.strip()))
    return any((folder / "pg_stat_statements.so").exists() for folder in folders)


@contextmanager
def _cluster(users: int) -> Iterator[Cluster]:
    from tests.servers import LocalServer, binaries

    counting = _has_pg_stat_statements(binaries())
    settings = dict(_SERVER_SETTINGS)
    if counting:
        settings["shared_preload_libraries"] = "pg_stat_statements"
    with LocalServer.start(settings=settings) as primary, primary.start_replica() as replica:
        cluster = Cluster(primary, replica, counting)
        try:
            if counting:
                primary.execute_admin("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            engine = create_engine(primary.url())
            init_db(engine)
            dispose(engine)
            with psycopg.connect(primary.url(), autocommit=True) as connection:
                for n in range(users):
                    connection.execute(
                        "INSERT INTO tasks (user_id, title) SELECT %s, 'seed ' || n "
                        "FROM generate_series(1, %s) AS n",
                        (f"{PREFIX}-{n}", TASKS_PER_USER),
                    )
            cluster.caught_up()
            yield cluster
        finally:
            cluster.close()


def _measure(
    cluster: Cluster,
    unit: Callable[[str], None],
    threads: int,
    seconds: float,
    tally: Served,
) -> None:
    before: list[tuple[int, int]] = []
    units, elapsed = phase(
        unit, threads, seconds, PREFIX, before=lambda: before.append(cluster.list_calls())
    )
    primary, replica = cluster.list_calls()
    tally.add(units, elapsed, primary - before[0][0], replica - before[0][1])


def run(threads: int = 8, windows: Windows | None = None) -> None:
    windows = windows or Windows(4, 2.0)
    section(f"Read replicas: read-only units of work per second, {threads} threads")
    print(
        "Private servers started for this section: a primary and one hot standby "
        "streaming from it (`pg_basebackup -R`), PostgreSQL from `tests.servers`; "
        f"{threads} users with {TASKS_PER_USER} tasks each, replayed on the replica "
        "before anything is measured. Each thread loops `with UnitOfWork(engine, "
        "read_only=True) as uow: uow.tasks.list(user_id=..., limit=50)` on "
        f"`create_engine(primary, settings, pool_size={threads}, max_overflow=0)`: "
        "(A) settings with no read URL, (B) `read_urls=(replica.url(),)`; "
        f"{windows.describe()}. Causal token: each unit creates a task on the primary, then "
        "reads with `UnitOfWork(read_only=True, after=uow.causal_token)` on engine B, "
        f"{windows.count // 2} windows after the others. Units/s: summed units ÷ summed "
        "seconds. Lists run: the increase of the list statement's `calls` in "
        "`pg_stat_statements` on each server over the counted units; a unit was served by "
        "the replica unless the primary ran its list (a replica found behind the token has "
        "run the list in the same pipeline as its check: that answer is discarded and the "
        "unit reads again on the primary). **Both servers and "
        "the client share this machine's 2 cores**: a replica here takes CPU from the "
        "primary instead of adding a compute, so the ratio says what routing costs or "
        "gains on one machine, not what a Neon read replica adds. No target: for "
        "information.\n",
        flush=True,
    )
    label = f"{threads} threads"
    try:
        with _cluster(threads) as cluster:
            figures = _run(cluster, threads, windows, label)
    except Exception as exc:
        reason = f"private primary + replica failed: {type(exc).__name__}: " + (
            str(exc).splitlines()[0] if str(exc) else ""
        )
        skipped(reason)
        figures = [not_measured(f"read throughput, one replica / none, {label}", "-", reason)]
    print()
    print_figures(figures)


def _run(cluster: Cluster, threads: int, windows: Windows, label: str) -> list[Figure]:
    base = load_settings()
    alone = create_engine(
        cluster.primary.url(),
        dataclasses.replace(base, read_urls=()),
        pool_size=threads,
        max_overflow=0,
    )
    routed = create_engine(
        cluster.primary.url(),
        dataclasses.replace(base, read_urls=(cluster.replica.url(),)),
        pool_size=threads,
        max_overflow=0,
    )

    def reader(engine: Any) -> Callable[[str], None]:
        def read(user: str) -> None:
            with UnitOfWork(engine, read_only=True) as uow:
                uow.tasks.list(user_id=user, limit=50)

        return read

    def write_then_read(user: str) -> None:
        with UnitOfWork(routed) as uow:
            uow.tasks.create(user_id=user, title="causal")
        with UnitOfWork(routed, read_only=True, after=uow.causal_token) as uow:
            uow.tasks.list(user_id=user, limit=50)

    tallies = {"a": Served(), "b": Served(), "causal": Served()}
    units = {"a": reader(alone), "b": reader(routed)}
    try:
        for _, key in windows.order():
            _measure(cluster, units[key], threads, windows.seconds, tallies[key])
        for _ in range(windows.count // 2):
            _measure(cluster, write_then_read, threads, windows.seconds, tallies["causal"])
    finally:
        dispose(alone)
        dispose(routed)

    a, b, causal = tallies["a"], tallies["b"], tallies["causal"]
    print(
        "| reads | units/s | / primary only | lists run on the primary | on the replica | "
        "of which discarded (replica behind the token) | units served by the replica |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = (
        ("(A) primary only, no read URL", a, "1.00"),
        ("(B) one replica, `read_urls=(replica,)`", b, f"{b.rate / a.rate:.2f}"),
        ("write, then read `after=causal_token` (engine B)", causal, "-"),
    )
    for name, tally, ratio in rows:
        print(
            f"| {name} | {tally.rate:,.0f} | {ratio} | {_count(cluster, tally.primary)} | "
            f"{_count(cluster, tally.replica)} | {_count(cluster, tally.discarded)} | "
            f"{_share(cluster, tally)} |",
            flush=True,
        )
    print(
        f"\nUnits counted by the client: A {a.units:,}, B {b.units:,}, causal "
        f"{causal.units:,} (one list result kept each).\n"
    )
    return [
        information(
            f"read throughput, one streaming replica / none, {label}, same 2 cores (issue 12)",
            f"{b.rate / a.rate:.2f} ({b.rate:,.0f} / {a.rate:,.0f} units/s)",
        ),
        information(
            "read-only units served by the replica, `read_urls=(replica,)` (issue 12)",
            _share(cluster, b),
        ),
        information(
            f"write + read `after=causal_token`, {label}: units/s; reads served by the "
            "replica (issue 12)",
            f"{causal.rate:,.0f} units/s; {_share(cluster, causal)}",
        ),
    ]


def _count(cluster: Cluster, value: int) -> str:
    return f"{value:,}" if cluster.counting else "not counted"


def _share(cluster: Cluster, tally: Served) -> str:
    share = tally.replica_share
    if not cluster.counting or share is None:
        return "not counted (no pg_stat_statements)"
    return f"{share:.0%} ({tally.on_replica:,} of {tally.units:,})"
