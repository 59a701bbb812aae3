"""Client CPU per unit of work, in instructions counted by callgrind.

Wall times on a shared machine swing 2x; instruction counts do not. The benchmark runs
itself again (`python -m benchmarks.cpu --child DIR`) under
`valgrind --tool=callgrind --instr-atstart=no`; the child loads a tiny C helper (compiled
here with gcc against valgrind's callgrind.h) through ctypes, switches instrumentation on,
builds each implementation, warms each operation, then runs N units inside one
`CALLGRIND_ZERO_STATS ... CALLGRIND_DUMP_STATS_AT(name)` bracket. Each dump's `totals:`
line divided by N is the client's instructions per unit of work (every thread of the
process counted; the server is another process, and time spent waiting is no instruction).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import URL

from benchmarks.common import ROOT, USER, ensure_tasks, normalize, package, section, skipped
from benchmarks.implementations import (
    OPERATIONS,
    Ours,
    OursAsync,
    PlainSQLModel,
    RawPsycopg,
    RawPsycopgAsync,
    SQLAlchemyCore,
)
from benchmarks.summary import at_most, not_measured, print_figures

IMPLEMENTATIONS: tuple[Any, ...] = (
    RawPsycopg,
    RawPsycopgAsync,
    Ours,
    OursAsync,
    PlainSQLModel,
    SQLAlchemyCore,
)
HEADER = "/usr/include/valgrind/callgrind.h"
HELPER = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_measure(void (*cb)(void), const char *name) {
    CALLGRIND_ZERO_STATS;
    cb();
    CALLGRIND_DUMP_STATS_AT(name);
}
"""
_URL_ENV = "PERSISTENCE_BENCH_CPU_URL"
_SYNC_TARGET = 2.0
_ASYNC_TARGET = 2.3
_TARGETS = {
    "mixed": "mixed unit, callgrind instructions, persistence / raw psycopg (sync)",
    "list": "list 50, callgrind instructions, persistence / raw psycopg (sync)",
    "create": "create, callgrind instructions, persistence / raw psycopg (sync)",
    "toggle": "toggle, callgrind instructions, persistence / raw psycopg (sync)",
}
_ASYNC_FIGURE = "mixed unit, callgrind instructions, persistence async / raw psycopg async"


def _key(impl: Any, operation: str) -> str:
    return f"{impl.name.replace(' ', '_')}.{operation}"


def _missing_tools() -> str | None:
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install valgrind)"
    if shutil.which("gcc") is None:
        return "gcc is not installed: the callgrind helper can't be compiled"
    if not Path(HEADER).is_file():
        return f"{HEADER} is missing (apt-get install valgrind)"
    return None


def _compile(directory: Path) -> Path:
    source = directory / "cg.c"
    library = directory / "cg.so"
    source.write_text(HELPER)
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)],
        check=True,
        capture_output=True,
    )
    return library


def parse_dumps(directory: Path) -> dict[str, int]:
    """Instruction totals of each `CALLGRIND_DUMP_STATS_AT(name)` dump, by name."""
    totals: dict[str, int] = {}
    for dump in sorted(directory.glob("out.*")):
        name = total = None
        for line in dump.read_text(errors="replace").splitlines():
            if match := re.match(r"desc: Trigger: Client Request: (.+)", line):
                name = match.group(1).strip()
            elif match := re.match(r"totals:\s+(\d+)", line):
                total = int(match.group(1))
        if name is not None and total is not None:
            totals[name] = total
    return totals


def _measure_all(directory: Path, units: int, warm: int) -> dict[str, int]:
    library = _compile(directory)
    log = directory / "valgrind.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={directory}/out",
        sys.executable,
        "-m",
        "benchmarks.cpu",
        "--child",
        str(library),
        "--units",
        str(units),
        "--warm",
        str(warm),
    ]
    with log.open("w") as stream:
        done = subprocess.run(command, env=env, cwd=ROOT, stdout=stream, stderr=stream)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError("the callgrind run failed:\n" + "\n".join(tail))
    return parse_dumps(directory)


def run(url: URL, units: int = 50, warm: int = 10) -> None:
    """Print the instructions per unit of each implementation and the targets' ratios."""
    section(f"Client CPU per unit of work: callgrind instructions (mean of {units} units)")
    print(
        "Direct connection to the server (no proxy), one connection each, 0 ms RTT. "
        f"Each operation warmed {warm} times first; the process is under callgrind, so "
        "only instruction counts are meaningful here, not times.\n"
    )
    missing = _missing_tools()
    if missing is not None:
        skipped(f"CPU section: {missing}")
        for name in _TARGETS.values():
            not_measured(name, f"≤ {_SYNC_TARGET:.1f}", missing)
        not_measured(_ASYNC_FIGURE, f"≤ {_ASYNC_TARGET:.1f}", missing)
        return
    ensure_tasks(url, USER)
    os.environ[_URL_ENV] = package(url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
            totals = _measure_all(Path(tmp), units, warm)
    finally:
        os.environ.pop(_URL_ENV, None)
    per_unit = {name: total / units for name, total in totals.items()}

    def cell(impl: Any, operation: str) -> float | None:
        return per_unit.get(_key(impl, operation))

    print("| implementation | " + " | ".join(OPERATIONS) + " |")
    print("|---" * (len(OPERATIONS) + 1) + "|")
    for impl in IMPLEMENTATIONS:
        values = [cell(impl, op) for op in OPERATIONS]
        shown = [f"{v / 1e6:.2f} M" if v is not None else "-" for v in values]
        print(f"| {impl.name} | " + " | ".join(shown) + " |")

    print("\nRatios to raw psycopg (instructions / instructions):\n")
    print("| ratio | " + " | ".join(OPERATIONS) + " |")
    print("|---" * (len(OPERATIONS) + 1) + "|")
    pairs = (
        (Ours, RawPsycopg, "persistence / raw psycopg"),
        (OursAsync, RawPsycopgAsync, "persistence async / raw psycopg async"),
        (OursAsync, RawPsycopg, "persistence async / raw psycopg (sync)"),
        (RawPsycopgAsync, RawPsycopg, "raw psycopg async / raw psycopg (sync)"),
        (PlainSQLModel, RawPsycopg, "plain SQLModel / raw psycopg"),
        (SQLAlchemyCore, RawPsycopg, "SQLAlchemy Core / raw psycopg"),
    )
    for mine, theirs, label in pairs:
        ratios = []
        for op in OPERATIONS:
            a, b = cell(mine, op), cell(theirs, op)
            ratios.append(f"{a / b:.2f}" if a is not None and b else "-")
        print(f"| {label} | " + " | ".join(ratios) + " |")

    print(
        "\nTargets: the sync ratios are persistence / raw psycopg (sync); the async target "
        "is persistence async / raw psycopg **async** (the same statements on a "
        "`psycopg.AsyncConnection`, each unit awaited on a private loop as ours is).\n"
    )
    figures = []
    for operation in ("mixed", "list", "create", "toggle"):
        a, b = cell(Ours, operation), cell(RawPsycopg, operation)
        if a is None or not b:
            figures.append(not_measured(_TARGETS[operation], "≤ 2.0", "no dump"))
        else:
            figures.append(at_most(_TARGETS[operation], a / b, _SYNC_TARGET))
    a, b = cell(OursAsync, "mixed"), cell(RawPsycopgAsync, "mixed")
    if a is None or not b:
        figures.append(not_measured(_ASYNC_FIGURE, "≤ 2.3", "no dump"))
    else:
        figures.append(at_most(_ASYNC_FIGURE, a / b, _ASYNC_TARGET))
    print_figures(figures)


# --- the child, under valgrind ------------------------------------------------------------


def _child(library: str, units: int, warm: int) -> int:
    helper = ctypes.CDLL(library)
    helper.cg_measure.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    helper.cg_start()
    url = normalize(os.environ[_URL_ENV])
    callback_type = ctypes.CFUNCTYPE(None)
    for cls in IMPLEMENTATIONS:
        impl = cls(url)
        try:
            for operation in OPERATIONS:
                work = getattr(impl, operation)
                for _ in range(warm):
                    work()
                failure: list[BaseException] = []

                def measured(work: Any = work, failure: list[BaseException] = failure) -> None:
                    # An exception can't cross the C frame: keep it, raise it after.
                    try:
                        for _ in range(units):
                            work()
                    except BaseException as exc:
                        failure.append(exc)

                callback = callback_type(measured)
                gc.collect()
                helper.cg_measure(
                    ctypes.cast(callback, ctypes.c_void_p), _key(cls, operation).encode()
                )
                if failure:
                    raise failure[0]
        finally:
            impl.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu")
    parser.add_argument("--child", required=True, help="the compiled helper (.so)")
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--warm", type=int, default=10)
    args = parser.parse_args(argv)
    return _child(args.child, args.units, args.warm)


if __name__ == "__main__":
    raise SystemExit(main())
