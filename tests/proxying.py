"""A latency proxy in front of the test database, and engines that go through it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.proxy import LatencyProxy, target_of
from persistence import create_async_engine, create_engine
from persistence.database import normalize_url
from persistence.testing import TestDatabase


def proxy_for(database: TestDatabase, *, rtt_ms: float = 0.0) -> LatencyProxy:
    """A proxy (not started: use it in a `with`) to the test database's server."""
    url = normalize_url(database.url)
    socket_dir = url.query.get("host")
    target = target_of(url.host, url.port, socket_dir if isinstance(socket_dir, str) else None)
    return LatencyProxy(target, rtt_ms=rtt_ms)


def url_through(proxy: LatencyProxy, database: TestDatabase) -> URL:
    """The test database's URL, pointed at `proxy` (TLS parameters kept)."""
    url = normalize_url(database.url)
    query = {k: v for k, v in url.query.items() if k != "host"}
    return url.set(host="127.0.0.1", port=proxy.port, query=query)


def engine_through(proxy: LatencyProxy, database: TestDatabase, **overrides: Any) -> Engine:
    """An engine for the test database that reaches it through `proxy`."""
    return create_engine(url_through(proxy, database), **overrides)


def async_engine_through(
    proxy: LatencyProxy, database: TestDatabase, **overrides: Any
) -> AsyncEngine:
    """An async engine for the test database that reaches it through `proxy`."""
    return create_async_engine(url_through(proxy, database), **overrides)
