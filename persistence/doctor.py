"""`python -m persistence doctor`: can this machine reach the configured database, and how?"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import TextIO

import psycopg
from sqlalchemy import Engine, inspect, literal, select
from sqlalchemy.engine import URL

from persistence.config import Settings, load_settings
from persistence.connections import connect_arguments, connector, read_replicas
from persistence.database import configured_url, create_engine, normalize_url
from persistence.errors import (
    AuthenticationError,
    ConfigurationError,
    DatabaseUnavailableError,
    PersistenceError,
    driver_errors,
    scrub,
)
from persistence.models import Task

__all__ = ["Report", "diagnose", "main", "source"]

logger = logging.getLogger(__name__)

PINGS = 5


@dataclass(frozen=True)
class Report:
    """What `doctor` found."""

    url: str
    server_version: str
    tls: str
    pooler: str
    median_rtt_ms: float
    table_exists: bool
    source: str = ""
    """Why this database, e.g. "DATABASE_URL from the environment"."""
    embedded: bool = False
    """Whether it is the embedded PostgreSQL (DATABASE_URL unset or empty)."""
    notes: tuple[str, ...] = ()
    replicas: tuple[str, ...] = ()
    """`DATABASE_READ_URL`'s read replicas, each connected to once: "#1 (host:port)"."""

    def lines(self) -> list[str]:
        """The report as printed, one fact a line."""
        table = "exists" if self.table_exists else "missing (init_db() creates it)"
        if self.embedded:
            database = f"embedded PostgreSQL ({self.source}) at {self.url}"
        else:
            database = f"{self.url} ({self.source})" if self.source else self.url
        return [
            f"database:   {database}",
            *(f"note:       {note}" for note in self.notes),
            f"server:     PostgreSQL {self.server_version}",
            f"tls:        {self.tls}",
            f"pooler:     {self.pooler}",
            f"round trip: {self.median_rtt_ms:.2f} ms (median of {PINGS} pings)",
            f"table:      {Task.__tablename__} {table}",
            *(f"replica:    {replica} reachable" for replica in self.replicas),
        ]


def _pooler(url: URL) -> str:
    host = url.host or ""
    if "-pooler" in host.split(".")[0]:
        return "yes (a Neon -pooler endpoint: PgBouncer in transaction mode)"
    if url.port == 6432:
        return "probably (port 6432, PgBouncer's default)"
    return "no (direct connection)"


_SOURCES = {
    "environment": "DATABASE_URL from the environment",
    "file": "DATABASE_URL from .env",
    "given": "DATABASE_URL as given",
    "unset": "DATABASE_URL is unset",
    "empty in the environment": (
        "DATABASE_URL is set but empty in the environment: treated as unset"
    ),
    "empty in the file": "DATABASE_URL is empty in .env: treated as unset",
}


def source(settings: Settings) -> tuple[str, tuple[str, ...]]:
    """Why `settings` select their database, in words, and notes on a surprising choice."""
    notes: tuple[str, ...] = ()
    if settings.database_url_origin == "empty in the environment" and settings.database_url_in_file:
        notes = (
            "the DATABASE_URL in .env is not used: the environment's wins, even empty "
            "(`unset DATABASE_URL` to use the one in .env)",
        )
    return _SOURCES[settings.database_url_origin], notes


def _advice(exc: PersistenceError, settings: Settings | None, where: str | None) -> str:
    # What to do, after the cause; only for a URL the user wrote (the embedded server's
    # own failures name its log instead). `where`: the setting being checked, if not
    # DATABASE_URL.
    if where is None:
        if settings is None or settings.database_url is None:
            return ""
        where = _SOURCES[settings.database_url_origin]
    if isinstance(exc, AuthenticationError):
        return (
            f"; check the user name and password in {where} (percent-encode '@', ':', '/' "
            "and '%' in them)"
        )
    if isinstance(exc, DatabaseUnavailableError):
        return (
            f"; check the host, port and database name in {where} and that the server is "
            "running and reachable from here"
        )
    return ""


def diagnose(engine: Engine) -> Report:
    """Connect through `engine` and gather the report; raises `PersistenceError` on failure."""
    with driver_errors("checking the database"), engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        version = raw.info.parameter_status("server_version") or "unknown"
        tls = "yes" if raw.pgconn.ssl_in_use else "no"
        timings = []
        for _ in range(PINGS):
            started = time.perf_counter()
            connection.execute(select(literal(1))).scalar_one()
            timings.append((time.perf_counter() - started) * 1000)
            connection.rollback()
        exists = inspect(connection).has_table(Task.__tablename__)
    return Report(
        url=engine.url.render_as_string(hide_password=True),
        server_version=version,
        tls=tls,
        pooler=_pooler(engine.url),
        median_rtt_ms=statistics.median(timings),
        table_exists=exists,
    )


def check_replicas(settings: Settings) -> tuple[str, ...]:
    """Connect once to each of `DATABASE_READ_URL`'s replicas; their labels. Raises
    `ConfigurationError` for a URL that is not one, or the `PersistenceError` of a replica
    that can't be reached (naming it and `DATABASE_READ_URL`)."""
    labels = []
    for url, label, replica in read_replicas(settings):
        with connector(connect_arguments(url, settings, {}), replica)():
            labels.append(label)
    return tuple(labels)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the report and return 0, or print one line naming the cause (and what to do)
    and return 1. Never a traceback: an unexpected error is named by its type and message."""
    del argv
    settings: Settings | None = None
    checking: str | None = None  # DATABASE_URL's server first
    try:
        settings = load_settings()
        url = normalize_url(configured_url(settings))
        engine = create_engine(url, settings, pool_size=1, max_overflow=0)
        try:
            report = diagnose(engine)
        finally:
            engine.dispose()
        checking = "DATABASE_READ_URL"
        replicas = check_replicas(settings)
    except ConfigurationError as exc:
        print(f"doctor: {scrub(str(exc))}", file=err)
        return 1
    except PersistenceError as exc:
        print(f"doctor: {scrub(str(exc))}{_advice(exc, settings, checking)}", file=err)
        return 1
    except Exception as exc:  # a bug: still one line, still scrubbed
        logger.debug("doctor failed unexpectedly", exc_info=True)
        print(f"doctor: unexpected {type(exc).__name__}: {scrub(str(exc))}", file=err)
        return 1
    why, notes = source(settings)
    report = replace(
        report,
        source=why,
        embedded=settings.database_url is None,
        notes=notes,
        replicas=replicas,
    )
    for line in report.lines():
        print(line, file=out)
    return 0
