"""From a URL to an `AsyncEngine`; the default one is kept per event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator
from typing import Any

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

from persistence.config import Settings, load_settings
from persistence.connections import remember_options
from persistence.database import configured_url, engine_arguments, instrument

__all__ = ["create_async_engine", "dispose_async_engine", "get_async_engine"]

logger = logging.getLogger(__name__)


def create_async_engine(
    url: str | URL, settings: Settings | None = None, **overrides: Any
) -> AsyncEngine:
    """Build an `AsyncEngine` for `url`, configured exactly as `create_engine` builds a sync one.

    Its units of work's pool belongs to the event loop that first uses it: use it from
    that loop only, and `await engine.dispose()` before the loop closes. Nothing
    connects until first use. Raises `ConfigurationError` for a bad URL.
    """
    sa_url, options, settings = engine_arguments(url, settings, **overrides)
    engine = sa_create_async_engine(sa_url, **options)
    instrument(engine.sync_engine)
    remember_options(engine.sync_engine, settings, options)
    return engine


class _Default:
    """A loop's default engine, and the parked async generator that disposes of it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.closer: AsyncGenerator[None, None] | None = None


# A psycopg connection can't be used across event loops, so each loop gets its own default
# engine. Entries are removed when their loop shuts down (see `_dispose_at_shutdown`) or,
# for a loop closed without that, by the next loop that asks.
_defaults: dict[asyncio.AbstractEventLoop, _Default] = {}
_defaults_lock = threading.Lock()


def _build_default() -> AsyncEngine:
    # Off the loop: settings read `.env` from disk, and the embedded server may start.
    settings = load_settings()
    return create_async_engine(configured_url(settings), settings)


async def get_async_engine() -> AsyncEngine:
    """The default `AsyncEngine` of the running event loop, built on first use from `DATABASE_URL`.

    Each event loop has its own (connections are never shared across loops); it is
    disposed when its loop shuts down (`asyncio.run`, `asyncio.Runner` and pytest-asyncio
    close async generators before closing the loop). With no `DATABASE_URL`, the embedded
    PostgreSQL is started in a worker thread, never blocking the loop. Raises
    `ConfigurationError` when settings are malformed or the embedded extra is missing.
    """
    loop = asyncio.get_running_loop()
    with _defaults_lock:
        found = _defaults.get(loop)
        orphans = [_defaults.pop(other) for other in list(_defaults) if other.is_closed()]
    for orphan in orphans:
        # A loop closed without closing its async generators: its connections are idle,
        # and closing a psycopg connection needs no round trip, so any loop may do it.
        logger.info("disposing the default engine of a closed event loop")
        await orphan.engine.dispose()
    if found is not None:
        return found.engine
    built = await asyncio.to_thread(_build_default)
    with _defaults_lock:
        found = _defaults.setdefault(loop, _Default(built))
    if found.engine is not built:  # another task of this loop was quicker
        await built.dispose()
        return found.engine
    found.closer = _dispose_at_shutdown(loop, found)
    await anext(found.closer)
    return built


async def _dispose_at_shutdown(
    loop: asyncio.AbstractEventLoop, default: _Default
) -> AsyncGenerator[None, None]:
    # Parked at the yield until the loop shuts down: `loop.shutdown_asyncgens()` closes
    # it there, and the engine is disposed on its own loop before that loop closes.
    try:
        yield
    finally:
        with _defaults_lock:
            if _defaults.get(loop) is default:
                del _defaults[loop]
        await default.engine.dispose()


async def dispose_async_engine() -> None:
    """Close the running loop's default engine's pooled connections and forget it.

    The next use builds a new one. Call it at the end of the application (a FastAPI
    lifespan, say); without it, the engine is disposed when the loop shuts down.
    """
    loop = asyncio.get_running_loop()
    with _defaults_lock:
        default = _defaults.pop(loop, None)
    if default is None:
        return
    if default.closer is not None:
        await default.closer.aclose()  # disposes, and the loop forgets the generator
    else:
        await default.engine.dispose()
