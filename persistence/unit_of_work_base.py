"""What `UnitOfWork` and `AsyncUnitOfWork` share: their state, their rules, and every step.

Each step works on a SQLAlchemy `Session`. The sync unit of work calls it directly; the
async one runs the very same step inside SQLAlchemy's greenlet (`AsyncSession.run_sync`),
where each database call awaits the asyncio driver. So the two differ only in how they
await: what is sent, when a transaction begins, when a failed first statement is sent
again, and when a lost COMMIT leaves the outcome unknown are decided here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, SessionTransaction

from persistence.database import transaction_options
from persistence.errors import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseError,
    PersistenceError,
    driver_errors,
)
from persistence.models import ISOLATION_LEVELS, check_flag, check_isolation_level
from persistence.operations import Operation

__all__ = ["ISOLATION_LEVELS", "UnitOfWorkBase", "default_binds"]

default_binds: dict[str, Any] = {"sync": None, "async": None}
"""What `UnitOfWork()` / `AsyncUnitOfWork()` with no `bind` use instead of the default
engine. Set only by the test kit (`persistence.testing`), so that code under test that
builds its own unit of work joins the test's connection and its rolled-back transaction."""

logger = logging.getLogger("persistence.unit_of_work")

T = TypeVar("T")
S = TypeVar("S")  # the session type: `Session`, or `AsyncSession` for the async unit of work


class UnitOfWorkBase(Generic[S]):
    """The state of a unit of work and the steps it takes on a `Session`; no I/O of its own."""

    _block: ClassVar[str]
    """How the unit of work is entered, for error messages."""
    _wrong_owner: ClassVar[str]
    """The error raised when it is used outside the thread (or loop) that entered it."""

    def __init__(self, bind: Any, *, isolation_level: str | None, read_only: bool) -> None:
        self._bind = bind
        self._isolation_level = check_isolation_level(isolation_level)
        self._read_only = bool(check_flag("read_only", read_only, optional=False))
        self._session: S | None = None
        self._owner: object = None
        # What the current transaction has done: any statement at all, and any write.
        self._began = False
        self._wrote = False
        self._savepoints = 0  # how many `savepoint()` blocks are open

    def __repr__(self) -> str:
        state = "active" if self._session is not None else "inactive"
        return f"<{type(self).__name__} {state} isolation_level={self._isolation_level!r}>"

    @staticmethod
    def _current_owner() -> object:
        """The thread (or event loop) using the unit of work now."""
        raise NotImplementedError

    def _new_session(self, session_class: Callable[..., S], bind: Any, *, joined: bool) -> S:
        if joined:
            # The caller's transaction stays open: our commits become savepoint releases.
            return session_class(
                bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
        engine = bind.execution_options(
            **transaction_options(isolation_level=self._isolation_level, read_only=self._read_only)
        )
        # expire_on_commit=False: results stay readable after the block, with no lazy loads.
        return session_class(bind=engine, expire_on_commit=False, autoflush=False)

    def _start(self, session: S) -> None:
        if self._session is not None:
            raise PersistenceError(
                f"this unit of work is already active; use a new {type(self).__name__}"
            )
        self._session = session
        self._owner = self._current_owner()
        self._began = self._wrote = False
        self._savepoints = 0

    def _stop(self) -> None:
        self._session = None
        self._owner = None

    def _active_session(self) -> S:
        if self._session is None:
            raise PersistenceError(
                "this unit of work is not active: use uow.tasks, commit(), rollback() and "
                f"savepoint() inside `{self._block}`"
            )
        if self._owner != self._current_owner():
            raise PersistenceError(self._wrong_owner)
        return self._session

    # The steps, each on a sync `Session` (for the async unit of work: its `sync_session`,
    # inside the greenlet).

    def _not_in_a_savepoint(self, action: str) -> None:
        if self._savepoints:
            raise PersistenceError(
                f"{action} inside `savepoint()` is refused: it would end the savepoint's "
                "transaction half-way; leave the savepoint block first"
            )

    def _run_on(self, session: Session, operation: Operation[T]) -> T:
        if operation.statement is None:
            return operation.read(None)
        statement = operation.statement
        if self._began and _aborted(session):
            raise _aborted_error(operation.action)
        value = self._first_or_replayed(
            session, operation.action, lambda: operation.read(session.execute(statement))
        )
        self._wrote = self._wrote or operation.writes
        # Every result is a snapshot: detached, so a later update can't change a Task the
        # caller holds and setting its attributes can't write behind validation's back.
        session.expunge_all()
        return value

    def _first_or_replayed(self, session: Session, action: str, send: Callable[[], T]) -> T:
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

    def _commit_on(self, session: Session) -> None:
        self._not_in_a_savepoint("commit()")
        began, wrote, self._began, self._wrote = self._began, self._wrote, False, False
        with driver_errors("committing"):
            aborted = began and _aborted(session)
        if aborted:
            # The server answers COMMIT on an aborted transaction with a ROLLBACK that
            # psycopg does not report: say so instead of letting it pass for a commit.
            self._rollback_quietly(session)
            raise _aborted_error("committing", "nothing since the last commit was committed")
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

    def _rollback_on(self, session: Session) -> None:
        self._not_in_a_savepoint("rollback()")
        self._began = self._wrote = False
        with driver_errors("rolling back"):
            session.rollback()

    def _open_savepoint(self, session: Session) -> SessionTransaction:
        def send() -> SessionTransaction:
            nested = session.begin_nested()
            # Asking for the connection makes SQLAlchemy send SAVEPOINT now rather than with
            # the next statement: a dead pooled connection shows here, where it is replayed.
            session.connection()
            return nested

        nested = self._first_or_replayed(session, "opening a savepoint", send)
        self._savepoints += 1
        return nested

    def _close_savepoint(
        self, session: Session, nested: SessionTransaction, failure: BaseException | None
    ) -> None:
        self._savepoints -= 1
        if not nested.is_active:
            return
        if failure is None:
            with driver_errors("releasing a savepoint"):
                if _aborted(session):
                    raise _aborted_error("releasing a savepoint")
                nested.commit()
            return
        try:
            with driver_errors("rolling back to a savepoint"):
                nested.rollback()
        except PersistenceError as lost:
            # The caller's own error is what propagates; the whole transaction is rolled
            # back at the end of the block anyway (the server discards it with the
            # connection). The loss is logged and told on the caller's error.
            logger.warning("rolling back to a savepoint failed: %s", lost, exc_info=True)
            failure.add_note(f"then rolling back to the savepoint failed: {lost}")

    def _end_on(self, session: Session, failed: bool) -> None:
        """The end of the block: commit (or roll back after an exception), then close.

        A savepoint still open (left out of order) means unfinished work: nothing since
        the last commit is committed, and `PersistenceError` says so.
        """
        try:
            if self._savepoints and not failed:
                self._savepoints = 0
                self._began = self._wrote = False
                self._rollback_quietly(session)
                raise PersistenceError(
                    "the unit of work ended while a savepoint() block was still open: "
                    "nothing since the last commit was committed"
                )
            if failed:
                self._began = self._wrote = False
                self._rollback_quietly(session)
            else:
                self._commit_on(session)
        finally:
            self._close_quietly(session)

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


def _aborted_error(action: str, outcome: str = "roll back first") -> DatabaseError:
    error = DatabaseError(
        f"{action}: an earlier statement failed and the server aborted the transaction "
        f"(SQLSTATE 25P02): {outcome}"
    )
    error.sqlstate = "25P02"
    return error


def _aborted(session: Session) -> bool:
    """Whether the session's transaction was aborted on the server by a failed statement."""
    transaction = session.get_transaction()
    connection = transaction.connection(None) if transaction is not None else None
    if connection is None:
        return False
    raw = connection.connection.driver_connection
    status = getattr(getattr(raw, "info", None), "transaction_status", None)
    return bool(status == psycopg.pq.TransactionStatus.INERROR)
