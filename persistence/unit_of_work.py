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
    Returned `Task` objects stay readable after the block. A unit of work belongs to the
    thread that entered it; it may be entered again after it has ended.

    `bind` is an `Engine` (default: the one built from `DATABASE_URL`) or a `Connection`
    already in a transaction, which the unit of work joins with savepoints (for tests).
    Raises `TaskValidationError` for an unknown `isolation_level`.
    """

    _block = "with UnitOfWork() as uow:"
    _wrong_owner = (
        "a unit of work belongs to the thread that entered it: give each thread its own UnitOfWork"
    )

    def __init__(
        self,
        bind: Engine | Connection | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(bind, isolation_level=isolation_level, read_only=read_only)
        self._tasks = TaskRepository(self._run)

    @staticmethod
    def _current_owner() -> object:
        return threading.get_ident()

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
        self._commit_on(self._active_session())

    def rollback(self) -> None:
        """Discard the work since the last commit; the block goes on in a new transaction.

        Raises `PersistenceError` outside an active block, or a subclass if the server fails.
        """
        self._rollback_on(self._active_session())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A SAVEPOINT: an exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block, or a subclass if the server fails.
        """
        session = self._active_session()
        nested = self._open_savepoint(session)
        try:
            yield
        except BaseException as exc:
            self._close_savepoint(session, nested, exc)
            raise
        self._close_savepoint(session, nested, None)

    def _run(self, operation: Operation[T]) -> T:
        return self._run_on(self._active_session(), operation)
