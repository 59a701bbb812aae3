"""`python -m persistence doctor`: can this machine reach the configured database, and how?"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import psycopg
from sqlalchemy import Engine, inspect, literal, select
from sqlalchemy.engine import URL

from persistence.config import load_settings
from persistence.database import configured_url, create_engine, normalize_url
from persistence.errors import PersistenceError, driver_errors, scrub
from persistence.models import Task

__all__ = ["Report", "diagnose", "main"]

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

    def lines(self) -> list[str]:
        """The report as printed, one fact a line."""
        table = "exists" if self.table_exists else "missing (init_db() creates it)"
        return [
            f"database:   {self.url}",
            f"server:     PostgreSQL {self.server_version}",
            f"tls:        {self.tls}",
            f"pooler:     {self.pooler}",
            f"round trip: {self.median_rtt_ms:.2f} ms (median of {PINGS} pings)",
            f"table:      {Task.__tablename__} {table}",
        ]


def _pooler(url: URL) -> str:
    host = url.host or ""
    if "-pooler" in host.split(".")[0]:
        return "yes (a Neon -pooler endpoint: PgBouncer in transaction mode)"
    if url.port == 6432:
        return "probably (port 6432, PgBouncer's default)"
    return "no (direct connection)"


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


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the report and return 0, or print one line naming the cause and return 1."""
    del argv
    try:
        settings = load_settings()
        url = normalize_url(configured_url(settings))
        engine = create_engine(url, settings, pool_size=1, max_overflow=0)
        try:
            report = diagnose(engine)
        finally:
            engine.dispose()
    except PersistenceError as exc:
        print(f"doctor: {scrub(str(exc))}", file=err)
        return 1
    for line in report.lines():
        print(line, file=out)
    return 0
