"""Pools of psycopg connections for units of work: bounded, fair, and no churn under load.

A pool opens connections on demand up to `max_size`, hands the most recently used one out
first (LIFO), and closes one only when it has been idle longer than `max_idle` while more
than `min_size` are open, when it is older than `max_lifetime`, or when it is broken. So a
steady load keeps the connections it needs open instead of closing and reopening them;
each new connection costs several round trips (TLS and SCRAM on Neon). A waiter is
handed a returned connection directly, first come first served, and gives up after
`timeout` with `PoolTimeoutError`. Connections are opened on the caller's own thread or
task, so a refused login or an unreachable server is the caller's error at once, not a
retry loop in the background.

`ConnectionPool` (threads) and `AsyncConnectionPool` (asyncio) share `_Core`, the
bookkeeping; they differ only in how they wait and how they close a connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg

from persistence.errors import PoolTimeoutError

__all__ = ["AsyncConnectionPool", "ConnectionPool", "Lease", "PoolOptions", "PoolStats"]

logger = logging.getLogger(__name__)

C = TypeVar("C", psycopg.Connection[Any], psycopg.AsyncConnection[Any])


@dataclass(frozen=True)
class PoolOptions:
    """How big a pool grows and how long its connections live."""

    min_size: int = 5
    """Connections kept open once opened, however idle (`PERSISTENCE_POOL_SIZE`)."""
    max_size: int = 20
    """Connections open at most (`PERSISTENCE_POOL_SIZE` + `PERSISTENCE_MAX_OVERFLOW`)."""
    timeout: float = 30.0
    """Seconds a caller waits for a free connection before `PoolTimeoutError`."""
    max_lifetime: float = 240.0
    """Seconds after which a connection is replaced (below Neon's 5-minute suspend)."""
    max_idle: float = 60.0
    """Seconds a connection beyond `min_size` may stay idle before it is closed."""


@dataclass(frozen=True)
class PoolStats:
    """A pool's counts at one moment."""

    size: int
    """Connections open or being opened."""
    idle: int
    """Connections open and free."""
    lent: int
    """Connections held by units of work."""
    waiting: int
    """Callers waiting for a connection."""
    opened: int
    """Connections opened since the pool was made."""


class Lease(Generic[C]):
    """A connection lent by a pool; give it back with `putconn`."""

    __slots__ = ("born", "connection", "epoch", "fresh", "returned")

    def __init__(self, connection: C, born: float, epoch: int) -> None:
        self.connection: C = connection
        self.born = born
        self.epoch = epoch
        self.returned = born
        self.fresh = True
        """Not yet used by a unit of work (its session settings are not yet made)."""


class _Waiter:
    """A caller waiting for a connection: it is handed a lease, or a slot to open one."""

    __slots__ = ("lease", "may_connect", "signal")

    def __init__(self, signal: Any) -> None:
        self.signal = signal
        self.lease: Lease[Any] | None = None
        self.may_connect = False

    @property
    def served(self) -> bool:
        return self.lease is not None or self.may_connect


class _Core:
    """The pool's bookkeeping, with no I/O and no waiting of its own: every method is
    called with `lock` held, and returns the connections the caller must close."""

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.idle: deque[Lease[Any]] = deque()
        self.waiters: deque[_Waiter] = deque()
        self.size = 0
        self.opened = 0
        self.epoch = 0
        self.closed = False

    def _usable(self, lease: Lease[Any], now: float) -> bool:
        return lease.epoch == self.epoch and now - lease.born < self.options.max_lifetime

    def acquire(self, now: float) -> tuple[Lease[Any] | None, bool, list[Lease[Any]]]:
        """A free lease, or leave to open a new connection (True), or neither (wait)."""
        stale: list[Lease[Any]] = []
        while self.idle:
            lease = self.idle.pop()
            if self._usable(lease, now):
                return lease, False, stale
            stale.append(lease)
            self.size -= 1
        if self.size < self.options.max_size and not self.waiters:
            self.size += 1
            return None, True, stale
        return None, False, stale

    def opened_one(self) -> None:
        self.opened += 1

    def release(
        self, lease: Lease[Any], healthy: bool, now: float
    ) -> tuple[_Waiter | None, list[Lease[Any]]]:
        """Take back a lease; hand it (or its slot) to the first waiter if there is one."""
        stale: list[Lease[Any]] = []
        if healthy and not self.closed and self._usable(lease, now):
            lease.returned = now
            if self.waiters:
                waiter = self.waiters.popleft()
                waiter.lease = lease
                return waiter, stale
            self.idle.append(lease)
            if self.size > self.options.min_size:
                stale = self._trim(now)
            return None, stale
        stale.append(lease)
        return self.forget(), stale

    def forget(self) -> _Waiter | None:
        """A connection is gone (closed, or never opened): its slot goes to a waiter
        (closed or not: a waiter left waiting would wait out its whole timeout)."""
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.may_connect = True
            return waiter
        self.size -= 1
        return None

    def _trim(self, now: float) -> list[Lease[Any]]:
        # The least recently used connections sit at the left: close those idle too long
        # while more than `min_size` are open.
        stale = []
        while (
            self.idle
            and self.size > self.options.min_size
            and now - self.idle[0].returned > self.options.max_idle
        ):
            stale.append(self.idle.popleft())
            self.size -= 1
        return stale

    def withdraw(self, waiter: _Waiter) -> None:
        """A waiter gave up: forget it (whatever it was handed meanwhile is its caller's)."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def close(self) -> list[Lease[Any]]:
        """Close the idle connections now; the lent ones are closed when given back."""
        self.closed = True
        stale = list(self.idle)
        self.idle.clear()
        self.size -= len(stale)
        return stale

    def invalidate(self) -> None:
        """Every connection opened so far may be dead: none of them is lent again."""
        self.epoch += 1

    def stats(self) -> PoolStats:
        lent = self.size - len(self.idle)
        return PoolStats(self.size, len(self.idle), lent, len(self.waiters), self.opened)


_OK, _IDLE, _OFF = (
    psycopg.pq.ConnStatus.OK,
    psycopg.pq.TransactionStatus.IDLE,
    psycopg.pq.PipelineStatus.OFF,
)


def _healthy(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    # Open (a closed connection's status is BAD), idle, and not half-way in a pipeline.
    pgconn = connection.pgconn
    return (
        pgconn.status == _OK
        and pgconn.transaction_status == _IDLE
        and pgconn.pipeline_status == _OFF
    )


def _timed_out(timeout: float) -> PoolTimeoutError:
    return PoolTimeoutError(
        f"no database connection became free in time (pool exhausted): waited {timeout:g} s; "
        "raise PERSISTENCE_POOL_SIZE / PERSISTENCE_MAX_OVERFLOW, or end units of work sooner"
    )


class ConnectionPool:
    """A thread-safe pool of `psycopg.Connection`s made by `connect`."""

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], options: PoolOptions
    ) -> None:
        self._connect = connect
        self._core = _Core(options)

    @property
    def options(self) -> PoolOptions:
        """How big it grows and how long its connections live."""
        return self._core.options

    def getconn(self) -> Lease[psycopg.Connection[Any]]:
        """Lend a connection: a free one, a new one, or the next one given back.

        Raises `PoolTimeoutError` after `options.timeout` seconds of waiting, and the
        package's connection errors (`DatabaseUnavailableError`, `AuthenticationError`)
        when a new connection can't be opened.
        """
        core = self._core
        with core.lock:
            lease, may_connect, stale = core.acquire(time.monotonic())
            waiter = None
            if lease is None and not may_connect:
                waiter = _Waiter(threading.Event())
                core.waiters.append(waiter)
        if stale:
            self._close(stale)
        if waiter is not None:
            try:
                signalled = waiter.signal.wait(core.options.timeout)
            except BaseException:
                # Interrupted (KeyboardInterrupt, a signal handler's timeout): the waiter
                # leaves, and what it was handed meanwhile goes back, or it would be lost.
                with core.lock:
                    core.withdraw(waiter)
                self._give_back(waiter)
                raise
            if not signalled:
                with core.lock:
                    core.withdraw(waiter)
                if not waiter.served:
                    raise _timed_out(core.options.timeout)
            lease, may_connect = waiter.lease, waiter.may_connect
        if lease is not None:
            return lease
        return self._open()

    def _give_back(self, waiter: _Waiter) -> None:
        # What a waiter that gave up was handed: the connection, or the slot to open one.
        if waiter.lease is not None:
            self.putconn(waiter.lease)
        elif waiter.may_connect:
            with self._core.lock:
                handed = self._core.forget()
            self._wake(handed)

    def _open(self) -> Lease[psycopg.Connection[Any]]:
        core = self._core
        try:
            connection = self._connect()
        except BaseException:
            with core.lock:
                waiter = core.forget()
            self._wake(waiter)
            raise
        with core.lock:
            core.opened_one()
            return Lease(connection, time.monotonic(), core.epoch)

    def putconn(self, lease: Lease[psycopg.Connection[Any]]) -> None:
        """Take a connection back; a broken or unfinished one is closed instead."""
        core = self._core
        healthy = _healthy(lease.connection)
        with core.lock:
            waiter, stale = core.release(lease, healthy, time.monotonic())
        if waiter is not None:
            waiter.signal.set()
        if stale:
            self._close(stale)

    def invalidate(self) -> None:
        """Replace every connection opened so far (a disconnect was seen: they may all be
        dead, as after a server restart) as each is next lent or given back."""
        with self._core.lock:
            self._core.invalidate()

    def close(self) -> None:
        """Close the idle connections; the lent ones are closed when given back."""
        with self._core.lock:
            stale = self._core.close()
        self._close(stale)

    close_now = close

    def stats(self) -> PoolStats:
        """The pool's counts now."""
        with self._core.lock:
            return self._core.stats()

    @staticmethod
    def _wake(waiter: _Waiter | None) -> None:
        if waiter is not None:
            waiter.signal.set()

    @staticmethod
    def _close(stale: list[Lease[psycopg.Connection[Any]]]) -> None:
        for lease in stale:
            lease.connection.close()


class AsyncConnectionPool:
    """A pool of `psycopg.AsyncConnection`s made by `connect`, for one event loop."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        options: PoolOptions,
    ) -> None:
        self._connect = connect
        self._core = _Core(options)

    @property
    def options(self) -> PoolOptions:
        """How big it grows and how long its connections live."""
        return self._core.options

    async def getconn(self) -> Lease[psycopg.AsyncConnection[Any]]:
        """Lend a connection, as `ConnectionPool.getconn` does; a cancellation while
        waiting gives back whatever it was handed."""
        core = self._core
        with core.lock:
            lease, may_connect, stale = core.acquire(time.monotonic())
            waiter = None
            if lease is None and not may_connect:
                waiter = _Waiter(asyncio.get_running_loop().create_future())
                core.waiters.append(waiter)
        await self._close(stale)
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter.signal), core.options.timeout)
            except BaseException as exc:
                with core.lock:
                    core.withdraw(waiter)
                if not waiter.served:
                    if isinstance(exc, TimeoutError):
                        raise _timed_out(core.options.timeout) from None
                    raise
                if not isinstance(exc, TimeoutError):
                    # Cancelled just as it was served: what it got goes back.
                    await self._give_back(waiter)
                    raise
            lease, may_connect = waiter.lease, waiter.may_connect
        if lease is not None:
            return lease
        return await self._open()

    async def _give_back(self, waiter: _Waiter) -> None:
        if waiter.lease is not None:
            await self.putconn(waiter.lease)
        elif waiter.may_connect:
            with self._core.lock:
                handed = self._core.forget()
            self._wake(handed)

    async def _open(self) -> Lease[psycopg.AsyncConnection[Any]]:
        core = self._core
        try:
            connection = await self._connect()
        except BaseException:
            with core.lock:
                waiter = core.forget()
            self._wake(waiter)
            raise
        with core.lock:
            core.opened_one()
            return Lease(connection, time.monotonic(), core.epoch)

    async def putconn(self, lease: Lease[psycopg.AsyncConnection[Any]]) -> None:
        """Take a connection back; a broken or unfinished one is closed instead."""
        core = self._core
        healthy = _healthy(lease.connection)
        with core.lock:
            waiter, stale = core.release(lease, healthy, time.monotonic())
        self._wake(waiter)
        await self._close(stale)

    def invalidate(self) -> None:
        """As `ConnectionPool.invalidate`."""
        with self._core.lock:
            self._core.invalidate()

    async def close(self) -> None:
        """Close the idle connections; the lent ones are closed when given back."""
        with self._core.lock:
            stale = self._core.close()
        await self._close(stale)

    def close_now(self) -> None:
        """`close()` without awaiting, from any thread (an engine's `dispose()` hook):
        closing a psycopg connection sends nothing the client waits for."""
        with self._core.lock:
            stale = self._core.close()
        for lease in stale:
            lease.connection.pgconn.finish()

    def discard_now(self, lease: Lease[psycopg.AsyncConnection[Any]]) -> None:
        """Close a lent connection without awaiting, from any thread or loop, and free
        its place (a unit of work that can't end on its own loop)."""
        lease.connection.pgconn.finish()
        with self._core.lock:
            waiter, _closed = self._core.release(lease, False, time.monotonic())  # [lease]
        self._wake(waiter)

    def stats(self) -> PoolStats:
        """The pool's counts now."""
        with self._core.lock:
            return self._core.stats()

    @staticmethod
    def _wake(waiter: _Waiter | None) -> None:
        if waiter is None:
            return
        future: asyncio.Future[None] = waiter.signal
        # The waiter may be on this loop or (a pool used wrongly) another: wake it there.
        future.get_loop().call_soon_threadsafe(_resolve, future)

    @staticmethod
    async def _close(stale: list[Lease[psycopg.AsyncConnection[Any]]]) -> None:
        for lease in stale:
            await lease.connection.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
