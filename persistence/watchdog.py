"""Stop a PostgreSQL server once no process using it is alive, however they ended (even SIGKILL).

Each process using the server in `data_dir` records itself (pid and start time) in
`<data_dir>.owners`, under an exclusive `flock`, and makes sure one watchdog process follows
that file. The watchdog runs detached, in a session of its own (Ctrl-C and a killed process
group leave it be), and checks twice a second; when no recorded process is alive it stops the
server with `pg_ctl stop -m fast` (as the data directory's owner), removes what the owners
asked it to, and exits. Its own log is `<data_dir>.watchdog.log`.

POSIX only. This file runs as the watchdog itself (`python -P watchdog.py DATA_DIR PG_CTL`),
so it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["hold", "owners", "release", "state_file", "stop_server"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
T = TypeVar("T")

# A pid with its start time: a pid reused by another process is not taken for the owner.
Identity = tuple[int, str]


def state_file(data_dir: Path) -> Path:
    """The file recording who uses the server in `data_dir` (beside it: initdb wants it empty)."""
    return data_dir.with_name(data_dir.name + ".owners")


def _identity(pid: int) -> Identity | None:
    """`pid` and its start time, or None when it is not running (a zombie has ended)."""
    if not Path("/proc/self/stat").exists():  # no procfs (macOS): liveness only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return (pid, "")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, started = fields[0], fields[19]
    return None if state in ("Z", "X") else (pid, started)


def _alive(identity: Identity) -> bool:
    return _identity(identity[0]) == identity


@dataclass
class _State:
    watchdog: Identity | None = None
    owners: list[Identity] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> _State:
        if not text.strip():
            return cls()
        # The first JSON value: a writer killed between writing and truncating leaves
        # the tail of a longer old state after it.
        raw: dict[str, Any] = json.JSONDecoder().raw_decode(text.lstrip())[0]
        watchdog = raw.get("watchdog")
        return cls(
            watchdog=(int(watchdog[0]), str(watchdog[1])) if watchdog else None,
            owners=[(int(pid), str(started)) for pid, started in raw.get("owners", [])],
            remove=[str(path) for path in raw.get("remove", [])],
        )

    def dump(self) -> str:
        return json.dumps({"watchdog": self.watchdog, "owners": self.owners, "remove": self.remove})


@contextlib.contextmanager
def _locked(path: Path, *, create: bool = True) -> Iterator[_State]:
    """The state under an exclusive lock; written back if the block changed it and did not raise."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        text = file.read()
        state = _State.parse(text)
        yield state
        new = state.dump()
        if new != text:
            # Written over, then cut to length: never an empty file for a moment (read
            # as "released", it would end the watchdog).
            file.seek(0)
            file.write(new)
            file.flush()
            file.truncate()


def hold(
    data_dir: Path,
    start: Callable[[], T],
    *,
    pg_ctl: Path,
    owner: int | None = None,
    remove: Sequence[Path] = (),
) -> T:
    """Record `owner` (default: this process) as using the server in `data_dir`, call `start`
    (which starts the server unless it runs), and make sure a watchdog stops the server once
    no recorded process is alive, then deletes `remove`. Returns what `start` returned.

    Raises what `start` raises (nothing is then recorded), `ProcessLookupError` when `owner`
    is not running, and `OSError` when the watchdog does not start.
    """
    me = _identity(owner if owner is not None else os.getpid())
    if me is None:
        raise ProcessLookupError(f"no running process {owner}")
    with _locked(state_file(data_dir)) as state:
        # Recorded, and watched, before the server starts: if this process dies while it
        # starts (it takes seconds the first time), the watchdog stops what was started.
        state.owners = [o for o in state.owners if _alive(o) and o != me] + [me]
        added = {str(path) for path in remove} - set(state.remove)
        state.remove = sorted({*state.remove, *added})
        if state.watchdog is None or not _alive(state.watchdog):
            state.watchdog = _spawn(data_dir, pg_ctl)
    failure: BaseException | None = None
    with _locked(state_file(data_dir)) as state:
        # Under the lock, so a watchdog can't decide to stop the server in between.
        try:
            result = start()
        except BaseException as exc:
            # Nothing recorded then.
            state.owners = [o for o in state.owners if o != me]
            state.remove = [path for path in state.remove if path not in added]
            failure = exc
    if failure is not None:
        raise failure
    return result


def owners(data_dir: Path) -> list[int]:
    """The pids recorded as using the server in `data_dir` (dead ones until the watchdog looks)."""
    try:
        with _locked(state_file(data_dir), create=False) as state:
            return [pid for pid, _ in state.owners]
    except FileNotFoundError:
        return []


def release(data_dir: Path) -> list[Path]:
    """Forget every owner and end the watchdog, leaving the server running (stop it with
    `stop_server`); return the paths the watchdog was to remove. Raises nothing when there is
    no record.
    """
    try:
        with _locked(state_file(data_dir), create=False) as state:
            if state.watchdog is not None and _alive(state.watchdog):
                os.kill(state.watchdog[0], signal.SIGTERM)
            state.watchdog, state.owners = None, []
            return [Path(path) for path in state.remove]
    except FileNotFoundError:
        return []


def _as_data_owner(data_dir: Path) -> dict[str, Any]:
    # PostgreSQL refuses to run as root: as root, act as the data directory's owner.
    info = data_dir.stat()
    if os.geteuid() != 0 or info.st_uid == 0:
        return {}
    return {"user": info.st_uid, "group": info.st_gid, "extra_groups": []}


def stop_server(data_dir: Path, pg_ctl: Path) -> None:
    """Stop the server in `data_dir` (`pg_ctl stop -m fast`, then `immediate` if that fails);
    nothing happens when it is not running. Raises `OSError` if it is still running after both.
    """
    for mode in ("fast", "immediate"):
        if not (data_dir / "postmaster.pid").exists():
            return
        done = subprocess.run(
            [str(pg_ctl), "-D", str(data_dir), "stop", "-m", mode, "-w", "-t", "60"],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",  # the server's user may not be allowed in ours
            **_as_data_owner(data_dir),
        )
        if done.returncode == 0:
            return
        logger.warning("pg_ctl stop -m %s failed for %s: %s", mode, data_dir, done.stderr.strip())
    if (data_dir / "postmaster.pid").exists():
        raise OSError(f"the PostgreSQL server in {data_dir} did not stop")


def _spawn(data_dir: Path, pg_ctl: Path) -> Identity:
    log = data_dir.with_name(data_dir.name + ".watchdog.log")
    with open(log, "ab") as errors:
        launcher = subprocess.Popen(
            [sys.executable, "-P", __file__, str(data_dir), str(pg_ctl)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd="/",
            start_new_session=True,
        )
        assert launcher.stdout is not None
        with launcher.stdout:
            line = launcher.stdout.readline()
        launcher.wait(timeout=60)
    identity = _identity(int(line)) if line.strip().isdigit() else None
    if launcher.returncode != 0 or identity is None:
        raise OSError(f"the watchdog for {data_dir} did not start (see {log})")
    return identity


def _watch(data_dir: Path, pg_ctl: Path) -> None:
    me = _identity(os.getpid())
    remove: list[str] = []
    while True:
        time.sleep(POLL_SECONDS)
        try:
            with _locked(state_file(data_dir), create=False) as state:
                if state.watchdog != me:
                    return  # released, or replaced after this one was taken for dead
                state.owners = [o for o in state.owners if _alive(o)]
                if state.owners:
                    continue
                logger.info("no process uses the server in %s any more: stopping it", data_dir)
                stop_server(data_dir, pg_ctl)
                state.watchdog = None
                remove = state.remove
                break
        except FileNotFoundError:
            return  # the record went with its directory: released and cleaned up
    for path in map(Path, remove):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _main(argv: list[str]) -> None:
    data_dir, pg_ctl = Path(argv[0]), Path(argv[1])
    child = os.fork()
    if child:  # the launcher: say who the watchdog is, and let the caller reap it at once
        os.write(1, f"{child}\n".encode())
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # the caller reads stdout until it closes
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s watchdog[%(process)d] %(levelname)s %(message)s",
    )
    try:
        _watch(data_dir, pg_ctl)
    except Exception:
        logger.exception("the watchdog for %s failed", data_dir)
        raise


if __name__ == "__main__":
    _main(sys.argv[1:])
