"""The unit of work: the only place that begins, commits and rolls back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from persistence.database import get_engine
from persistence.errors import PersistenceError
from persistence.operations import Operation
from persistence.repository import TaskRepository
from persistence.unit_of_work_base import ISOLATION_LEVELS, UnitOfWorkBase, default_binds

__all__ = ["ISOLATION_LEVELS", "UnitOfWork"]

T = TypeVar("T")


class UnitOfWork(UnitOfWorkBase[Session]):
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
    Raises `TaskValidationError` for an unknown `isolation_level`.
    """

    _block = "with UnitOfWork() as uow:"
    _wrong_owner = ""  # any thread may use it, one operation at a time

    def __init__(
        self,
        bind: Engine | Connection | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(bind, isolation_level=isolation_level, read_only=read_only)
        self._operation = threading.Lock()
        self._tasks = TaskRepository(self._run)

    @staticmethod
    def _current_owner() -> object:
        return None  # not tied to a thread: `_one_at_a_time` guards each operation

    @contextmanager
    def _one_at_a_time(self) -> Iterator[Session]:
        session = self._active_session()
        if not self._operation.acquire(blocking=False):
            raise PersistenceError(
                "this unit of work is running an operation on another thread: run its "
                "operations one after another, or give each thread its own UnitOfWork"
            )
        try:
            yield session
        finally:
            self._operation.release()

    def __enter__(self) -> Self:
        bind = self._bind if self._bind is not None else default_binds["sync"] or get_engine()
        self._start(self._new_session(Session, bind, joined=isinstance(bind, Connection)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._active_session()
        # An operation still running on another thread finishes first: the end of the
        # block must not race it for the connection. Then the block always ends here:
        # committed or rolled back, and the connection given back.
        with self._operation:
            try:
                self._end_on(session, failed=exc_type is not None)
            finally:
                self._stop()

    @property
    def tasks(self) -> TaskRepository:
        """The task repository; raises `PersistenceError` outside an active `with` block."""
        self._active_session()
        return self._tasks

    def commit(self) -> None:
        """Commit the work so far; the block goes on in a new transaction.

        Raises a `PersistenceError` subclass if the commit fails (nothing is committed then),
        or `CommitOutcomeUnknownError` if the connection was lost while COMMIT was in flight.
        """
        with self._one_at_a_time() as session:
            self._commit_on(session)

    def rollback(self) -> None:
        """Discard the work since the last commit; the block goes on in a new transaction.

        Raises `PersistenceError` outside an active block, or a subclass if the server fails.
        """
        with self._one_at_a_time() as session:
            self._rollback_on(session)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A SAVEPOINT: an exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block, or a subclass if the server fails.
        """
        with self._one_at_a_time() as session:
            nested = self._open_savepoint(session)
        try:
            yield
        except BaseException as exc:
            if self._session is session:  # else the block already ended, and rolled back
                with self._one_at_a_time():
                    self._close_savepoint(session, nested, exc)
            raise
        if self._session is session:
            with self._one_at_a_time():
                self._close_savepoint(session, nested, None)

    def _run(self, operation: Operation[T]) -> T:
        with self._one_at_a_time() as session:
            return self._run_on(session, operation)
