"""The unit of work: the only place that begins, commits and rolls back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg.rows import tuple_row
from sqlalchemy import Connection, Engine

from persistence import statements
from persistence.connections import Database, Replica, connector, database_of
from persistence.database import get_engine
from persistence.errors import PersistenceError
from persistence.operations import Operation
from persistence.pool import ConnectionPool, Lease
from persistence.repository import TaskRepository
from persistence.unit_of_work_base import (
    ISOLATION_LEVELS,
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

__all__ = ["ISOLATION_LEVELS", "UnitOfWork"]

logger = logging.getLogger("persistence.unit_of_work")

TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK

T = TypeVar("T")


class UnitOfWork(UnitOfWorkBase):
    """One atomic piece of work: `with UnitOfWork() as uow:` then `uow.tasks`.

    A clean exit commits; an exception rolls back everything since the last commit and
    propagates unchanged. `commit()` and `rollback()` end the current transaction and the
    block goes on in a new one; `savepoint()` undoes only its own part on an exception.
    Returned `Task` objects stay readable after the block. A unit of work may be entered,
    used and left on different threads (as a web framework's threadpool does), one
    operation at a time: an operation started while another runs raises
    `PersistenceError`, and the end of the block waits for a running one. It may be
    entered again after it has ended.

    `bind` is an `Engine` (default: the one built from `DATABASE_URL`) or a `Connection`
    already in a transaction, which the unit of work joins with savepoints (for tests).
    `read_only=True` reads from a read replica when `DATABASE_READ_URL` names some; with
    `after=<a causal token>` only from one that has replayed that far (else the primary).
    `timeout` (seconds; default `PERSISTENCE_TIMEOUT`) bounds every statement and lock
    wait: past it the server cancels the statement (`DeadlineExceededError`). Raises
    `TaskValidationError` for an unknown `isolation_level` or a bad `timeout` / `after`.
    """

    _block = "with UnitOfWork() as uow:"

    def __init__(
        self,
        bind: Engine | Connection | None = None,
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
        self._operation = threading.Lock()
        self._tasks = TaskRepository(self._run)
        self._database: Database[ConnectionPool] | None = None
        self._pool: ConnectionPool | None = None
        self._replica: Replica[ConnectionPool] | None = None
        self._lease: Lease[psycopg.Connection[Any]] | None = None
        self._connection: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Self:
        bind = self._bind if self._bind is not None else default_binds["sync"] or get_engine()
        if isinstance(bind, Connection):
            raw = bind.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            self._start(joined=True, deadlines=deadlines(None, None))
            self._connection = raw
            return self
        self._start_on(database_of(bind))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._check_active()
        # An operation still running on another thread finishes first: the end of the
        # block must not race it for the connection. Then the block always ends here:
        # committed or rolled back, and the connection given back.
        with self._operation:
            self._check_active()  # not ended meanwhile by another thread's exit
            try:
                self._drive(self._end_steps(exc_type is not None, aborted(self._connection)))
            finally:
                self._give_back()
                self._stop()

    @property
    def tasks(self) -> TaskRepository:
        """The task repository; raises `PersistenceError` outside an active `with` block."""
        self._check_active()
        return self._tasks

    def commit(self) -> None:
        """Commit the work so far; the block goes on in a new transaction.

        Raises a `PersistenceError` subclass if the commit fails (nothing is committed
        then). If the connection is lost while COMMIT is in flight, the server is asked
        how it ended: committed, this returns; rolled back, `ConnectionLostError`;
        unknown, `CommitOutcomeUnknownError`.
        """
        with self._one_at_a_time():
            self._drive(self._commit_steps(aborted(self._connection)))

    def rollback(self) -> None:
        """Discard the work since the last commit; the block goes on in a new transaction.

        Raises `PersistenceError` outside an active block or inside a savepoint, or a
        subclass if the server fails.
        """
        with self._one_at_a_time():
            self._drive(self._rollback_steps())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A SAVEPOINT: an exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block, or a subclass if the server
        fails. `commit()` and `rollback()` inside it raise `PersistenceError`.
        """
        with self._one_at_a_time():
            name = self._drive(self._open_savepoint_steps())
        try:
            yield
        except BaseException as exc:
            if self._active:  # else the block already ended, and rolled back
                with self._one_at_a_time():
                    self._drive(self._close_savepoint_steps(name, exc, False))
            raise
        if self._active:
            with self._one_at_a_time():
                self._drive(self._close_savepoint_steps(name, None, aborted(self._connection)))

    def _run(self, operation: Operation[T]) -> T:
        self._claim()  # as `_one_at_a_time`, spelled out: this is every operation's path
        try:
            return self._drive(self._run_steps(operation, aborted(self._connection)))
        finally:
            self._operation.release()

    @contextmanager
    def _one_at_a_time(self) -> Iterator[None]:
        self._claim()
        try:
            yield
        finally:
            self._operation.release()

    def _claim(self) -> None:
        self._check_active()
        if not self._operation.acquire(blocking=False):
            raise PersistenceError(
                "this unit of work is running an operation on another thread: run its "
                "operations one after another, or give each thread its own UnitOfWork"
            )
        if not self._active:
            # The block ended on another thread between the check and the claim: the
            # operation must not run on an ended unit (it would take a connection that
            # nothing gives back).
            self._operation.release()
            self._check_active()

    # --- performing the steps' requests ------------------------------------------------

    def _drive(self, steps: Steps[T]) -> T:
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
                answer = self._perform(request)
            except BaseException as exc:  # handed to the steps, which decide
                failure = exc

    def _perform(self, request: Request) -> Any:
        if isinstance(request, Execute):
            return self._execute(request.batch)
        if isinstance(request, Release):
            return self._give_back()
        if isinstance(request, Reconnect):
            assert self._pool is not None
            self._discard()
            self._pool.invalidate()
            return None
        if isinstance(request, Reroute):
            assert self._database is not None
            assert self._replica is not None
            if request.aside is not None:
                down = request.aside == "down"
                self._database.set_aside(self._replica, request.reason, down=down)
            self._end_read_transaction()
            self._give_back()
            self._pool, self._replica = self._database.primary, None
            return None
        assert isinstance(request, Resolve)
        return self._resolve(request.xid, request.delay)

    def _connected(self) -> psycopg.Connection[Any]:
        if self._connection is None:
            assert self._pool is not None
            self._lease = self._pool.getconn()
            self._connection = self._lease.connection
        return self._connection

    def _execute(self, batch: Batch) -> list[Any]:
        connection = self._connected()
        lease = self._lease
        # A fresh lease is a new connection, idle (the pool lends no other).
        if lease is not None and lease.fresh:
            lease.fresh = False
            batch, added = with_session_setup(batch)
            return (_send(connection, batch))[added:]
        return _send(connection, batch)

    def _end_read_transaction(self) -> None:
        # A snapshot unit's BEGIN went to the replica with the check: end that read-only
        # transaction, so that the pool keeps the connection instead of closing it.
        connection = self._connection
        if connection is not None and not connection.closed and in_transaction(connection):
            try:
                connection.rollback()
            except psycopg.Error:
                logger.info("ending a replica's read-only transaction failed", exc_info=True)

    def _give_back(self) -> None:
        lease, self._lease, self._connection = self._lease, None, None
        if lease is not None and self._pool is not None:
            try:
                self._pool.putconn(lease)
            except Exception:  # closing a broken connection: never over the caller's
                logger.warning("giving the connection back failed", exc_info=True)

    def _discard(self) -> None:
        lease = self._lease
        if lease is not None:
            lease.connection.close()
        self._give_back()

    def _resolve(self, xid: str, delay: float) -> tuple[str, str] | None:
        assert self._database is not None
        time.sleep(delay)
        statement = statements.xact_status()
        try:
            with connector(self._database.primary_arguments)() as connection:
                row = connection.execute(statement.sql, statement.args({"xid": xid})).fetchone()
        except (psycopg.Error, PersistenceError) as exc:
            logger.warning("could not ask how transaction %s ended: %s", xid, exc)
            return None
        return None if row is None else (str(row[0]), str(row[1]))


def _send(connection: psycopg.Connection[Any], batch: Batch) -> list[Any]:
    """Send the statements in one round trip; the rows of each (`None` for a statement
    that returns none). One statement goes with its parameters bound by the server;
    several go as one simple query, their parameters bound by psycopg (`multi_statement`
    says why)."""
    sql, args, rows = batch[0] if len(batch) == 1 else multi_statement(batch)
    # Parameters of several statements are bound by psycopg; with none, any cursor sends
    # one simple query.
    cursor = (
        connection.cursor() if len(batch) == 1 or not args else psycopg.ClientCursor(connection)
    )
    cursor.row_factory = rows or tuple_row
    cursor.execute(sql, args)
    results = []
    while True:
        returned = cursor.pgresult is not None and cursor.pgresult.status == TUPLES_OK
        results.append(cursor.fetchall() if returned else None)
        if not cursor.nextset():
            return results
