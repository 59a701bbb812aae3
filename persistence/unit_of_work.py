"""The unit of work: the only place that begins, commits and rolls back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self, TypeVar

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from persistence.database import get_engine, transaction_options
from persistence.errors import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    PersistenceError,
    TaskValidationError,
    driver_errors,
)
from persistence.models import check_flag
from persistence.operations import Operation
from persistence.repository import TaskRepository

__all__ = ["ISOLATION_LEVELS", "UnitOfWork"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ISOLATION_LEVELS = frozenset({"READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"})


class UnitOfWork:
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

    def __init__(
        self,
        bind: Engine | Connection | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
    ) -> None:
        if isolation_level is not None and isolation_level not in ISOLATION_LEVELS:
            raise TaskValidationError(
                "isolation_level",
                f"must be one of {sorted(ISOLATION_LEVELS)} or None, got {isolation_level!r}",
            )
        self._bind = bind
        self._isolation_level = isolation_level
        self._read_only = bool(check_flag("read_only", read_only, optional=False))
        self._session: Session | None = None
        self._thread: int | None = None
        # What the current transaction has done: any statement at all, and any write.
        self._began = False
        self._wrote = False
        self._tasks = TaskRepository(self._run)

    def __repr__(self) -> str:
        state = "active" if self._session is not None else "inactive"
        return f"<UnitOfWork {state} isolation_level={self._isolation_level!r}>"

    def _new_session(self) -> Session:
        bind = self._bind if self._bind is not None else get_engine()
        if isinstance(bind, Connection):
            # The caller's transaction stays open: our commits become savepoint releases.
            return Session(
                bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
        engine = bind.execution_options(
            **transaction_options(isolation_level=self._isolation_level, read_only=self._read_only)
        )
        # expire_on_commit=False: results stay readable after the block, with no lazy loads.
        return Session(bind=engine, expire_on_commit=False, autoflush=False)

    def __enter__(self) -> Self:
        if self._session is not None:
            raise PersistenceError("this unit of work is already active; use a new UnitOfWork")
        self._session = self._new_session()
        self._thread = threading.get_ident()
        self._began = self._wrote = False
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._active_session()
        try:
            if exc_type is None:
                self._commit(session)
            else:
                self._rollback_quietly(session)
                self._began = self._wrote = False
        finally:
            self._session = None
            self._thread = None
            self._close_quietly(session)

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
        self._commit(self._active_session())

    def rollback(self) -> None:
        """Discard the work since the last commit; the block goes on in a new transaction."""
        session = self._active_session()
        self._began = self._wrote = False
        with driver_errors("rolling back"):
            session.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A SAVEPOINT: an exception inside undoes only the work inside, then propagates."""
        session = self._active_session()
        nested = self._first_or_replayed("opening a savepoint", session.begin_nested)
        try:
            yield
        except BaseException:
            if nested.is_active:
                with driver_errors("rolling back to a savepoint"):
                    nested.rollback()
            raise
        if nested.is_active:
            with driver_errors("releasing a savepoint"):
                nested.commit()

    def _run(self, operation: Operation[T]) -> T:
        session = self._active_session()
        if operation.statement is None:
            return operation.read(None)
        statement = operation.statement
        value = self._first_or_replayed(
            operation.action, lambda: operation.read(session.execute(statement))
        )
        self._wrote = self._wrote or operation.writes
        # Every result is a snapshot: detached, so a later update can't change a Task the
        # caller holds and setting its attributes can't write behind validation's back.
        session.expunge_all()
        return value

    def _first_or_replayed(self, action: str, send: Callable[[], T]) -> T:
        session = self._active_session()
        try:
            with driver_errors(action):
                value = send()
        except ConnectionLostError:
            if self._began:
                raise
            # A pooled connection that died while idle (a suspended or restarted server)
            # fails on the first statement, before this transaction did anything: nothing
            # is lost, so send it again on a fresh connection.
            logger.info("the pooled connection was dead; %s again on a new one", action)
            self._rollback_quietly(session)
            with driver_errors(action):
                value = send()
        self._began = True
        return value

    def _commit(self, session: Session) -> None:
        wrote, self._began, self._wrote = self._wrote, False, False
        try:
            with driver_errors("committing"):
                session.commit()
        except ConnectionLostError as exc:
            if not wrote:
                raise
            raise CommitOutcomeUnknownError(
                "the connection was lost while COMMIT was in flight: the work may or may not "
                "have been committed; check before doing it again"
            ) from exc.__cause__
        logger.debug("unit of work committed")

    def _active_session(self) -> Session:
        if self._session is None:
            raise PersistenceError(
                "this unit of work is not active: use uow.tasks, commit(), rollback() and "
                "savepoint() inside `with UnitOfWork() as uow:`"
            )
        if self._thread != threading.get_ident():
            raise PersistenceError(
                "a unit of work belongs to the thread that entered it: "
                "give each thread its own UnitOfWork"
            )
        return self._session

    @staticmethod
    def _rollback_quietly(session: Session) -> None:
        # The caller's exception is what matters; a failed rollback (say, on a dead
        # connection) is logged, not raised over it. The server discards the work anyway.
        try:
            session.rollback()
            logger.debug("unit of work rolled back")
        except (sa_exc.SQLAlchemyError, psycopg.Error):
            logger.warning("rollback failed; the connection is discarded", exc_info=True)

    @staticmethod
    def _close_quietly(session: Session) -> None:
        try:
            session.close()
        except (sa_exc.SQLAlchemyError, psycopg.Error):
            logger.warning("closing the session failed; the connection is discarded", exc_info=True)
