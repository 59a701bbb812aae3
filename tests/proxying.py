"""A latency proxy in front of the test database, and async engines that go through it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.proxy import LatencyProxy, target_of
from persistence import create_async_engine
from persistence.database import normalize_url
from persistence.testing import TestDatabase


def proxy_for(database: TestDatabase, *, rtt_ms: float = 0.0) -> LatencyProxy:
    """A proxy (not started: use it in a `with`) to the test database's server."""
    url = normalize_url(database.url)
    socket_dir = url.query.get("host")
    target = target_of(url.host, url.port, socket_dir if isinstance(socket_dir, str) else None)
    return LatencyProxy(target, rtt_ms=rtt_ms)


def async_engine_through(
    proxy: LatencyProxy, database: TestDatabase, *, plaintext: bool = False, **overrides: Any
) -> AsyncEngine:
    """An async engine for the test database that reaches it through `proxy`.

    `plaintext` asks for no TLS (libpq uses it over TCP when the server offers it), so that
    the proxy can read the statements going by.
    """
    url = normalize_url(database.url)
    query = {k: v for k, v in url.query.items() if k != "host"}
    if plaintext:
        query["sslmode"] = "disable"
    return create_async_engine(url.set(host="127.0.0.1", port=proxy.port, query=query), **overrides)
