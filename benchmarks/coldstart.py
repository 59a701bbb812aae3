"""Cold start: import time, what `import persistence` drags in, and the round trips of the
very first unit of work of a fresh process (connect included), plain and TLS + SCRAM.

The first unit runs in a fresh child process (`python -m benchmarks.coldstart --first`),
through a `LatencyProxy` in that child that counts client-to-server flights from before
the first connect to the end of the unit. Over TLS the proxy can't read the messages and
counts every reply as ending a flight, as libpq waits for each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import URL

from benchmarks.common import (
    DATABASE,
    LIST,
    ROOT,
    USER,
    ensure_tasks,
    libpq,
    normalize,
    package,
    section,
    shown,
    skipped,
    target,
    through,
)
from benchmarks.summary import Figure, at_most, not_measured, print_figures

IMPORT_TARGET_MS = 250.0
TARGETS = {"plain": 3, "TLS + SCRAM": 8}
TLS_ENV = "PERSISTENCE_BENCH_TLS_URL"
_CHILD_URL_ENV = "PERSISTENCE_BENCH_CHILD_URL"
_MARKER = "--persistence-bench-marker--"
_STATEMENTS = {
    "import persistence": "import persistence",
    "from persistence import UnitOfWork": "from persistence import UnitOfWork",
}
_ASYNC_MODULES = ("asyncio", "sqlalchemy.ext.asyncio", "greenlet")


def _own_imports_us(code: str) -> tuple[int, int | None, int]:
    """(µs of every top-level import `code` triggers, µs of the `persistence` line, the
    summed *self* µs of every `persistence` and `persistence.*` line: the package's own
    modules, without what they import)."""
    program = f"import sys; sys.stderr.write({_MARKER!r} + '\\n'); sys.stderr.flush(); {code}"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", program],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    lines = done.stderr.splitlines()
    after = lines[lines.index(_MARKER) + 1 :]
    total, package_line, own_self = 0, None, 0
    for line in after:
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        if not cumulative.strip().isdigit():
            continue  # the header line
        module = name.strip()
        if module == "persistence" or module.startswith("persistence."):
            own_self += int(own)
        indent = len(name) - len(name.lstrip()) - 1
        if indent == 0:
            total += int(cumulative)
            if module == "persistence":
                package_line = int(cumulative)
    return total, package_line, own_self


def _cpu_ms(code: str) -> float:
    """User + sys CPU ms of a fresh `python -c code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def _loaded(code: str) -> dict[str, bool]:
    program = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps({{m: m in sys.modules for m in {_ASYNC_MODULES!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded: dict[str, bool] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def imports(runs: int = 5) -> None:
    section(f"Cold start: `python -X importtime` (median of {runs} fresh processes)")
    print(
        "The cumulative µs of every top-level import the statement triggers (for "
        "`import persistence`: its own line), in a fresh interpreter; a first, untimed run "
        'writes the bytecode caches. "Own modules" sums the *self* µs of every '
        "`persistence` and `persistence.*` line of the same runs: the package's own "
        "module code, without SQLAlchemy, SQLModel, psycopg... that they import. Import "
        "time is wall time and swings with the machine's load; the CPU column (user + sys "
        "of `python -c <statement>` less that of `python -c pass`, median, no -X "
        "importtime) swings less.\n"
    )
    print(
        "| statement | ms (median) | min ms | own modules ms (self, median) | CPU ms | "
        + " | ".join(f"`{m}` loaded" for m in _ASYNC_MODULES)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(_ASYNC_MODULES))
    bare = statistics.median(_cpu_ms("pass") for _ in range(runs))
    figures = []
    for label, code in _STATEMENTS.items():
        _own_imports_us(code)
        samples, own_samples = [], []
        for _ in range(runs):
            total, package_line, own_self = _own_imports_us(code)
            samples.append(package_line if code == "import persistence" and package_line else total)
            own_samples.append(own_self)
        ms = statistics.median(samples) / 1000
        own_ms = statistics.median(own_samples) / 1000
        loaded = _loaded(code)
        cpu_ms = statistics.median(_cpu_ms(code) for _ in range(runs)) - bare
        print(
            f"| `{label}` | {ms:.0f} | {min(samples) / 1000:.0f} | {own_ms:.0f} | {cpu_ms:.0f} | "
            + " | ".join("yes" if loaded[m] else "no" for m in _ASYNC_MODULES)
            + " |",
            flush=True,
        )
        figures.append(
            at_most(f'`python -X importtime -c "{code}"`, ms', ms, IMPORT_TARGET_MS, "{:.0f}")
        )
        if code == "from persistence import UnitOfWork":
            figures.append(
                at_most(
                    f"own modules' import time for `{code}`, ms (self µs of the "
                    "`persistence*` lines, summed)",
                    own_ms,
                    IMPORT_TARGET_MS,
                    "{:.0f}",
                )
            )
        for module in ("asyncio", "sqlalchemy.ext.asyncio"):
            figures.append(
                _absent(
                    f"`{module}` not in sys.modules after `{code}` (What to build)", loaded[module]
                )
            )
    loaded_by_sqlalchemy = _loaded("import sqlalchemy")["asyncio"]
    print(
        f"\n(For reference: `import sqlalchemy` alone loads asyncio: "
        f"{'yes' if loaded_by_sqlalchemy else 'no'}.)\n"
    )
    print_figures(figures)


def _absent(name: str, present: bool) -> Any:
    from benchmarks.summary import record

    return record(name, "loaded" if present else "not loaded", "not loaded", not present)


# --- the first unit of work -------------------------------------------------------------


def _first_unit(url: URL, implementation: str) -> dict[str, int]:
    env = {**os.environ, _CHILD_URL_ENV: package(url), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.coldstart", "--first", implementation],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the first-unit child failed:\n{done.stderr[-2000:]}")
    reply: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return reply


def first_units(url: URL, tls_url: str | None) -> None:
    section("First unit of work of a fresh process: round trips, connect included")
    print(
        "A fresh child process builds the engine, then runs one unit of work: "
        "`with UnitOfWork(engine) as uow: uow.tasks.list(user_id=..., limit=50)`; raw: "
        "`psycopg.connect(...)` then the same SELECT and `fetchall()`. Counted by the "
        "proxy from before the connect to the end of the unit. TLS + SCRAM: the server of "
        "`--tls-url`, else a private one started for this section (`tests.servers."
        "LocalServer`, TLS on, `hostssl ... scram-sha-256` only, a role with a password, "
        "`sslmode=require&channel_binding=require`), stopped at its end.\n"
    )
    print("| server | persistence RT | raw psycopg RT | connections (ours, raw) |")
    print("|---|---|---|---|")
    notes: list[str] = []
    figures = [_first_unit_row("plain", lambda: contextlib.nullcontext(url))]
    figures.append(
        _first_unit_row(
            "TLS + SCRAM",
            (lambda: contextlib.nullcontext(normalize(tls_url)))
            if tls_url
            else lambda: _private_tls(notes),
        )
    )
    print()
    for note in notes:
        print(f"{note}\n")
    print_figures(figures)


def _first_unit_row(
    label: str, server: Callable[[], contextlib.AbstractContextManager[URL]]
) -> Figure:
    name = f"first unit of work after start, round trips ({label})"
    try:
        with server() as url:
            if label != "plain":
                _prepare(url)
            ensure_tasks(url, USER)
            ours, raw = _first_unit(url, "ours"), _first_unit(url, "raw")
    except Exception as exc:
        reason = f"{label} server failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        print(f"| {label} | {reason} | | |")
        skipped(reason)
        return not_measured(name, f"≤ {TARGETS[label]}", reason)
    print(
        f"| {label} (`{shown(url)}`) | {ours['round_trips']} | {raw['round_trips']} | "
        f"{ours['connections']}, {raw['connections']} |",
        flush=True,
    )
    return at_most(name, ours["round_trips"], TARGETS[label], "{:.0f}")


@contextlib.contextmanager
def _private_tls(notes: list[str]) -> Iterator[URL]:
    """A private TLS server that lets one password role in over TLS with SCRAM only; its
    URL (password included: never print it unmasked). Raises `ServerError` (from
    `tests.servers`) when no PostgreSQL build with TLS is on the machine."""
    from tests.servers import LocalServer

    role, password = "bench_tls", secrets.token_urlsafe(18)
    hba = [
        f"hostssl all {role} 127.0.0.1/32 scram-sha-256",
        f"hostnossl all {role} 127.0.0.1/32 reject",
    ]
    settings = {"password_encryption": "scram-sha-256"}
    with LocalServer.start(ssl=True, settings=settings, hba=hba) as server:
        server.create_role(role, password=password, attributes=("LOGIN", "CREATEDB"))
        server.execute_admin(f'CREATE DATABASE "{DATABASE}" OWNER "{role}"')
        version = server.execute_admin("SHOW server_version")[0][0]
        notes.append(
            f"TLS + SCRAM: a private server, PostgreSQL {version} from `{server.bin_dir}` "
            f"(the machine's own server is not touched), stopped after this section."
        )
        yield normalize(
            server.url(
                DATABASE,
                user=role,
                password=password,
                sslmode="require",
                channel_binding="require",
            )
        )


def _prepare(url: URL) -> None:
    from benchmarks.common import dispose
    from persistence import create_engine, init_db

    engine = create_engine(package(url))
    init_db(engine)
    dispose(engine)


def _child(implementation: str) -> int:
    from benchmarks.proxy import LatencyProxy

    url = normalize(os.environ[_CHILD_URL_ENV])
    with LatencyProxy(target(url)) as proxy:
        proxied = through(url, proxy.port)
        if implementation == "ours":
            from persistence import UnitOfWork, create_engine

            engine = create_engine(package(proxied))
            proxy.reset_counts()
            with UnitOfWork(engine) as uow:
                uow.tasks.list(user_id=USER, limit=50)
        else:
            import psycopg

            proxy.reset_counts()
            connection = psycopg.connect(libpq(proxied), autocommit=True, prepare_threshold=None)
            connection.execute(LIST, (USER,)).fetchall()
        # Read before anything is closed: a close sends Terminate, which is no round trip.
        trips, opened = proxy.round_trips, proxy.connections_opened
    print(json.dumps({"round_trips": trips, "connections": opened}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart")
    parser.add_argument("--first", choices=("ours", "raw"), required=True)
    return _child(parser.parse_args(argv).first)


if __name__ == "__main__":
    raise SystemExit(main())
