"""An in-memory unit of work with the real one's contract, for unit tests without a database."""

from __future__ import annotations

import copy
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from persistence import operations
from persistence.async_repository import AsyncTaskRepository
from persistence.errors import (
    DatabaseError,
    PersistenceError,
    TaskNotFoundError,
)
from persistence.models import (
    Task,
    check_after_token,
    check_flag,
    check_isolation_level,
    check_timeout,
)
from persistence.operations import Operation
from persistence.repository import TaskRepository
from persistence.unit_of_work_base import inside_a_savepoint

__all__ = ["AsyncFakeUnitOfWork", "FakeDatabase", "FakeUnitOfWork"]

T = TypeVar("T")


@dataclass
class _Row:
    id: int
    user_id: str
    title: str
    description: str | None
    complete: bool
    created_at: datetime
    updated_at: datetime

    def task(self) -> Task:
        return Task(
            id=self.id,
            user_id=self.user_id,
            title=self.title,
            description=self.description,
            complete=self.complete,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


@dataclass
class FakeDatabase:
    """The committed state that `FakeUnitOfWork`s share (one per test, say)."""

    rows: dict[int, _Row] = field(default_factory=dict)
    _next_id: int = 1
    _clock: datetime = field(default_factory=lambda: datetime.now(UTC))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tasks(self) -> list[Task]:
        """Every committed task, oldest first (for assertions)."""
        with self._lock:
            return [row.task() for row in sorted(self.rows.values(), key=lambda r: r.id)]

    def _tick(self) -> datetime:
        # A clock that always moves forward, as `updated_at` must.
        self._clock = max(datetime.now(UTC), self._clock + timedelta(microseconds=1))
        return self._clock

    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id - 1


class _Transaction:
    """A working copy of the database plus what it changed, applied row by row on commit."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        with database._lock:
            self.rows = copy.deepcopy(database.rows)
        self.changed: set[int] = set()

    def commit(self) -> None:
        with self.database._lock:
            for task_id in self.changed:
                if task_id in self.rows:
                    self.database.rows[task_id] = copy.deepcopy(self.rows[task_id])
                else:
                    self.database.rows.pop(task_id, None)
        self.changed.clear()


class FakeUnitOfWork:
    """`UnitOfWork`'s contract in memory: the same `tasks` repository (validation included),
    commit on a clean exit, rollback on an exception, `commit()`, `rollback()`,
    `savepoint()`, user scoping, ordering, `TaskNotFoundError`. `isolation_level` is
    checked but has no effect: a fake transaction sees only its own changes and the
    commits made before it began.

    Units of work built on one `FakeDatabase` see each other's commits.
    """

    def __init__(
        self,
        database: FakeDatabase | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
        timeout: float | None = None,
        after: str | None = None,
    ) -> None:
        # Checked as the real ones are; a fake has no server to bound, nor replicas.
        check_isolation_level(isolation_level)
        check_timeout(timeout)
        check_after_token(after)
        self.causal_token: str | None = None
        """Always `None`: a fake has no WAL to point at."""
        self.database = database if database is not None else FakeDatabase()
        self._read_only = bool(check_flag("read_only", read_only, optional=False))
        self._transaction: _Transaction | None = None
        self._savepoints = 0
        self._tasks = TaskRepository(self._run)

    def __enter__(self) -> Self:
        if self._transaction is not None:
            raise PersistenceError("this unit of work is already active; use a new UnitOfWork")
        self._transaction = _Transaction(self.database)
        self._savepoints = 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        transaction = self._active()
        self._transaction = None
        if exc_type is None and self._savepoints:
            self._savepoints = 0
            raise PersistenceError(
                "the unit of work ended while a savepoint() block was still open: "
                "nothing since the last commit was committed"
            )
        if exc_type is None:
            transaction.commit()

    @property
    def tasks(self) -> TaskRepository:
        """The task repository; raises `PersistenceError` outside an active `with` block."""
        self._active()
        return self._tasks

    def commit(self) -> None:
        """Make the work so far visible to other units of work on the same database.

        Raises `PersistenceError` outside an active block.
        """
        transaction = self._active()
        self._not_in_a_savepoint("commit()")
        transaction.commit()
        self._transaction = _Transaction(self.database)

    def rollback(self) -> None:
        """Discard the work since the last commit; `PersistenceError` outside a block."""
        self._active()
        self._not_in_a_savepoint("rollback()")
        self._transaction = _Transaction(self.database)

    def _not_in_a_savepoint(self, action: str) -> None:
        if self._savepoints:
            raise inside_a_savepoint(action)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """An exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block.
        """
        transaction = self._active()
        rows, changed = copy.deepcopy(transaction.rows), set(transaction.changed)
        self._savepoints += 1
        try:
            yield
        except BaseException:
            if self._transaction is transaction:
                transaction.rows, transaction.changed = rows, changed
            raise
        finally:
            self._savepoints -= 1

    def _active(self) -> _Transaction:
        if self._transaction is None:
            raise PersistenceError(
                "this unit of work is not active: use uow.tasks, commit(), rollback() and "
                "savepoint() inside `with UnitOfWork() as uow:`"
            )
        return self._transaction

    def _run(self, operation: Operation[T]) -> T:
        transaction = self._active()
        if operation.statement is None:
            return operation.read(None)
        kind, args = operation.request
        if operation.writes and self._read_only:
            # What the server answers: SQLSTATE 25006, read_only_sql_transaction.
            error = DatabaseError(
                f"{operation.action}: database error (SQLSTATE 25006): "
                "cannot execute this in a read-only transaction"
            )
            error.sqlstate = "25006"
            raise error
        answer: Any = getattr(self, f"_{kind}")(transaction, **args)
        return answer  # type: ignore[no-any-return]

    def _owned(self, transaction: _Transaction, user_id: str, task_id: int) -> _Row | None:
        row = transaction.rows.get(task_id)
        return row if row is not None and row.user_id == user_id else None

    def _insert(
        self, transaction: _Transaction, user_id: str, title: str, description: Any
    ) -> Task:
        now = self.database._tick()
        row = _Row(self.database._new_id(), user_id, title, description, False, now, now)
        transaction.rows[row.id] = row
        transaction.changed.add(row.id)
        return row.task()

    def _create(self, transaction: _Transaction, **values: Any) -> Task:
        return self._insert(transaction, values["user_id"], values["title"], values["description"])

    def _create_many(
        self, transaction: _Transaction, user_id: str, titles: list[str], descriptions: list[Any]
    ) -> list[Task]:
        return [
            self._insert(transaction, user_id, title, description)
            for title, description in zip(titles, descriptions, strict=True)
        ]

    def _get(self, transaction: _Transaction, user_id: str, task_id: int) -> Task | None:
        row = self._owned(transaction, user_id, task_id)
        return row.task() if row is not None else None

    def _selected(
        self, transaction: _Transaction, user_id: str, complete: bool | None
    ) -> list[_Row]:
        return [
            row
            for row in transaction.rows.values()
            if row.user_id == user_id and (complete is None or row.complete == complete)
        ]

    def _list(
        self,
        transaction: _Transaction,
        user_id: str,
        complete: bool | None,
        limit: int | None,
        after: tuple[datetime, int] | None,
    ) -> list[Task]:
        rows = sorted(
            self._selected(transaction, user_id, complete),
            key=lambda row: (row.created_at, row.id),
            reverse=True,
        )
        if after is not None:
            rows = [row for row in rows if (row.created_at, row.id) < after]
        if limit is None and len(rows) > operations.LIST_LIMIT_MAX:
            raise operations.too_many_tasks()  # as the real one: never a silently cut list
        return [row.task() for row in rows[:limit]]

    def _count(self, transaction: _Transaction, user_id: str, complete: bool | None) -> int:
        return len(self._selected(transaction, user_id, complete))

    def _changed(
        self, transaction: _Transaction, user_id: str, task_id: int, changes: dict[str, Any]
    ) -> Task:
        row = self._owned(transaction, user_id, task_id)
        if row is None:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = max(self.database._tick(), row.updated_at + timedelta(microseconds=1))
        transaction.changed.add(task_id)
        return row.task()

    def _update(
        self, transaction: _Transaction, user_id: str, task_id: int, changes: dict[str, Any]
    ) -> Task:
        return self._changed(transaction, user_id, task_id, changes)

    def _toggle(self, transaction: _Transaction, user_id: str, task_id: int) -> Task:
        row = self._owned(transaction, user_id, task_id)
        flipped = {"complete": not row.complete} if row is not None else {}
        return self._changed(transaction, user_id, task_id, flipped)

    def _delete(self, transaction: _Transaction, user_id: str, task_id: int) -> None:
        if self._owned(transaction, user_id, task_id) is None:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)
        del transaction.rows[task_id]
        transaction.changed.add(task_id)


class AsyncFakeUnitOfWork:
    """`AsyncUnitOfWork`'s contract in memory: `FakeUnitOfWork` behind `async` methods.

    Units of work built on one `FakeDatabase` (sync or async) see each other's commits.
    """

    def __init__(
        self,
        database: FakeDatabase | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
        timeout: float | None = None,
        after: str | None = None,
    ) -> None:
        self._fake = FakeUnitOfWork(
            database,
            isolation_level=isolation_level,
            read_only=read_only,
            timeout=timeout,
            after=after,
        )
        self.database = self._fake.database
        self.causal_token: str | None = None
        """Always `None`: a fake has no WAL to point at."""
        self._tasks = AsyncTaskRepository(self._run)

    async def __aenter__(self) -> Self:
        self._fake.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._fake.__exit__(exc_type, exc, traceback)

    @property
    def tasks(self) -> AsyncTaskRepository:
        """The async task repository; raises `PersistenceError` outside an active block."""
        self._fake._active()
        return self._tasks

    async def commit(self) -> None:
        """Make the work so far visible to other units of work on the same database.

        Raises `PersistenceError` outside an active block.
        """
        self._fake.commit()

    async def rollback(self) -> None:
        """Discard the work since the last commit; `PersistenceError` outside a block."""
        self._fake.rollback()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """An exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block.
        """
        with self._fake.savepoint():
            yield

    async def _run(self, operation: Operation[T]) -> T:
        return self._fake._run(operation)
