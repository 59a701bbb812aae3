"""The unit of work for asyncio callers: the sync contract, awaited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg.rows import tuple_row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence import statements
from persistence.async_database import get_async_engine
from persistence.async_repository import AsyncTaskRepository
from persistence.connections import Database, Replica, async_connector, database_of
from persistence.errors import PersistenceError
from persistence.operations import Operation
from persistence.pool import AsyncConnectionPool, Lease
from persistence.unit_of_work_base import (
    Batch,
    Execute,
    Reconnect,
    Release,
    Request,
    Reroute,
    Resolve,
    Steps,
    UnitOfWorkBase,
    aborted,
    deadlines,
    default_binds,
    in_transaction,
    multi_statement,
    with_session_setup,
)

__all__ = ["AsyncTaskRepository", "AsyncUnitOfWork"]  # the repository lives in async_repository

logger = logging.getLogger("persistence.unit_of_work")

TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK

T = TypeVar("T")


class AsyncUnitOfWork(UnitOfWorkBase):
    """One atomic piece of work for asyncio: `async with AsyncUnitOfWork() as uow:`.

    The contract of `UnitOfWork`, with every database call awaited: a clean exit commits;
    an exception rolls back everything since the last commit and propagates unchanged;
    `await commit()`, `await rollback()` and `async with savepoint():` as there. Results
    stay readable after the block. The same statements are sent, with the same round
    trips, validation, errors, replay of a first statement on a dead pooled connection,
    read replicas, causal tokens, deadlines and resolution of a lost COMMIT.

    Cancellation (a timeout, a client that went away) rolls the work back; COMMIT, once
    sent, and the return of the connection to the pool are never interrupted: a
    cancellation that arrives meanwhile takes effect as soon as they are done. A unit of
    work belongs to the event loop that entered it, and runs one operation at a time:
    give each task its own (`PersistenceError` otherwise). Its end, from anywhere, never
    leaves a transaction or a connection behind.

    `bind` is an `AsyncEngine` (default: the running loop's, from `DATABASE_URL`) or an
    `AsyncConnection` already in a transaction, which the unit of work joins with
    savepoints (for tests). Raises `TaskValidationError` for an unknown `isolation_level`
    or a bad `timeout` / `after`.
    """

    _block = "async with AsyncUnitOfWork() as uow:"

    def __init__(
        self,
        bind: AsyncEngine | AsyncConnection | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
        timeout: float | None = None,
        after: str | None = None,
    ) -> None:
        super().__init__(
            isolation_level=isolation_level, read_only=read_only, timeout=timeout, after=after
        )
        self._bind = bind
        self._idle = asyncio.Event()  # set: no operation is running
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks = AsyncTaskRepository(self._run)
        self._database: Database[AsyncConnectionPool] | None = None
        self._pool: AsyncConnectionPool | None = None
        self._replica: Replica[AsyncConnectionPool] | None = None
        self._lease: Lease[psycopg.AsyncConnection[Any]] | None = None
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Self:
        bind = self._bind if self._bind is not None else default_binds["async"]
        if bind is None:
            bind = await get_async_engine()
        if isinstance(bind, AsyncConnection):
            adapted = bind.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            raw = getattr(adapted, "_connection", adapted)
            assert isinstance(raw, psycopg.AsyncConnection)
            self._start(joined=True, deadlines=deadlines(None, None))
            self._connection = raw
        else:
            self._start_on(database_of(bind.sync_engine, asynchronous=True))
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._check_active()
        if _running_loop() is not self._loop:
            # Its connection can't be used from here: close it (the server rolls the
            # transaction back) rather than leave it open.
            self._abandon()
            raise PersistenceError(
                "an async unit of work must end on the event loop that entered it: its "
                "transaction was rolled back and its connection closed"
            )
        await _uninterrupted(self._end(exc_type is not None))

    async def _end(self, failed: bool) -> None:
        try:
            while not self._idle.is_set():
                # An operation still running (one of two started at once, say) finishes
                # first: the end of the block must not race it for the connection. A
                # loop: another task may start one before this one is woken.
                await self._idle.wait()
            await self._step(self._end_steps(failed, aborted(self._connection)))
        finally:
            await self._give_back()
            self._stop()

    @property
    def tasks(self) -> AsyncTaskRepository:
        """The task repository; raises `PersistenceError` outside an active block."""
        self._check_owner()
        return self._tasks

    async def commit(self) -> None:
        """Commit the work so far; the block goes on in a new transaction.

        Raises as `UnitOfWork.commit` does (a COMMIT cut in flight is resolved).
        """
        self._check_owner()
        await _uninterrupted(self._step(self._commit_steps(aborted(self._connection))))

    async def rollback(self) -> None:
        """Discard the work since the last commit; the block goes on in a new transaction.

        Raises `PersistenceError` outside an active block or inside a savepoint, or a
        subclass if the server fails.
        """
        self._check_owner()
        await self._step(self._rollback_steps())

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A SAVEPOINT: an exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block, or a subclass if the server
        fails. `commit()` and `rollback()` inside it raise `PersistenceError`.
        """
        self._check_owner()
        name = await self._step(self._open_savepoint_steps())
        try:
            yield
        except BaseException as exc:
            if self._active:  # else the block already ended, and rolled back
                await self._step(self._close_savepoint_steps(name, exc, False))
            raise
        if self._active:
            await self._step(self._close_savepoint_steps(name, None, aborted(self._connection)))

    async def _run(self, operation: Operation[T]) -> T:
        self._check_owner()
        return await self._step(self._run_steps(operation, aborted(self._connection)))

    def _check_owner(self) -> None:
        self._check_active()
        if _running_loop() is not self._loop:
            raise PersistenceError(
                "an async unit of work belongs to the event loop that entered it: give each "
                "thread and each event loop its own AsyncUnitOfWork"
            )

    async def _step(self, steps: Steps[T]) -> T:
        if not self._idle.is_set():
            steps.close()
            raise PersistenceError(
                "this unit of work is already running an operation: await each one before "
                "the next, and give each concurrent task its own AsyncUnitOfWork"
            )
        self._idle.clear()
        try:
            return await self._drive(steps)
        finally:
            self._idle.set()

    # --- performing the steps' requests ------------------------------------------------

    async def _drive(self, steps: Steps[T]) -> T:
        answer: Any = None
        failure: BaseException | None = None
        while True:
            try:
                request = steps.throw(failure) if failure is not None else steps.send(answer)
            except StopIteration as done:
                result: T = done.value
                return result
            answer, failure = None, None
            try:
                answer = await self._perform(request)
            except BaseException as exc:  # handed to the steps, which decide
                failure = exc

    async def _perform(self, request: Request) -> Any:
        if isinstance(request, Execute):
            return await self._execute(request.batch)
        if isinstance(request, Release):
            return await self._give_back()
        if isinstance(request, Reconnect):
            assert self._pool is not None
            await self._discard()
            self._pool.invalidate()
            return None
        if isinstance(request, Reroute):
            assert self._database is not None
            assert self._replica is not None
            if request.aside is not None:
                down = request.aside == "down"
                self._database.set_aside(self._replica, request.reason, down=down)
            await self._end_read_transaction()
            await self._give_back()
            self._pool, self._replica = self._database.primary, None
            return None
        assert isinstance(request, Resolve)
        return await self._resolve(request.xid, request.delay)

    async def _connected(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None:
            assert self._pool is not None
            self._lease = await self._pool.getconn()
            self._connection = self._lease.connection
        return self._connection

    async def _execute(self, batch: Batch) -> list[Any]:
        connection = await self._connected()
        lease = self._lease
        # A fresh lease is a new connection, idle (the pool lends no other).
        if lease is not None and lease.fresh:
            lease.fresh = False
            batch, added = with_session_setup(batch)
            return (await _send(connection, batch))[added:]
        return await _send(connection, batch)

    async def _end_read_transaction(self) -> None:
        # A snapshot unit's BEGIN went to the replica with the check: end that read-only
        # transaction, so that the pool keeps the connection instead of closing it.
        connection = self._connection
        if connection is not None and not connection.closed and in_transaction(connection):
            try:
                await connection.rollback()
            except psycopg.Error:
                logger.info("ending a replica's read-only transaction failed", exc_info=True)

    async def _give_back(self) -> None:
        lease, self._lease, self._connection = self._lease, None, None
        if lease is not None and self._pool is not None:
            try:
                await self._pool.putconn(lease)
            except Exception:  # closing a broken connection: never over the caller's
                logger.warning("giving the connection back failed", exc_info=True)

    async def _discard(self) -> None:
        lease = self._lease
        if lease is not None:
            await lease.connection.close()
        await self._give_back()

    def _abandon(self) -> None:
        lease, self._lease, self._connection = self._lease, None, None
        if lease is not None and self._pool is not None:
            self._pool.discard_now(lease)
        self._stop()

    async def _resolve(self, xid: str, delay: float) -> tuple[str, str] | None:
        assert self._database is not None
        await asyncio.sleep(delay)
        statement = statements.xact_status()
        try:
            connect = async_connector(self._database.primary_arguments)
            async with await connect() as connection:
                cursor = await connection.execute(statement.sql, statement.args({"xid": xid}))
                row = await cursor.fetchone()
        except (psycopg.Error, PersistenceError) as exc:
            logger.warning("could not ask how transaction %s ended: %s", xid, exc)
            return None
        return None if row is None else (str(row[0]), str(row[1]))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no loop running in this thread
        return None


async def _send(connection: psycopg.AsyncConnection[Any], batch: Batch) -> list[Any]:
    """As the sync `_send`: one statement bound by the server, or several as one simple
    query; the rows of each."""
    sql, args, rows = batch[0] if len(batch) == 1 else multi_statement(batch)
    # Parameters of several statements are bound by psycopg; with none, any cursor sends
    # one simple query.
    cursor = (
        connection.cursor()
        if len(batch) == 1 or not args
        else psycopg.AsyncClientCursor(connection)
    )
    cursor.row_factory = rows or tuple_row
    await cursor.execute(sql, args)
    results = []
    while True:
        returned = cursor.pgresult is not None and cursor.pgresult.status == TUPLES_OK
        results.append(await cursor.fetchall() if returned else None)
        if not cursor.nextset():
            return results


async def _uninterrupted(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the caller is cancelled meanwhile, then let the
    cancellation through (a COMMIT once sent; a connection on its way back to the pool)."""
    task = asyncio.ensure_future(work)
    interruption: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            interruption = exc
    if interruption is not None:
        if not task.cancelled() and task.exception() is not None:
            interruption.__context__ = task.exception()
        raise interruption
    return task.result()
