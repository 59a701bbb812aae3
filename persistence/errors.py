"""The package's errors, and the one place driver errors are translated into them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc

__all__ = [
    "AuthenticationError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConnectionLostError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DeadlineExceededError",
    "IntegrityViolationError",
    "PersistenceError",
    "PoolTimeoutError",
    "TaskNotFoundError",
    "TaskValidationError",
    "TransactionConflictError",
    "driver_errors",
    "is_disconnect",
    "register_secret",
    "scrub",
    "translate",
]


class PersistenceError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(PersistenceError):
    """A setting is missing or malformed, or an optional part is not installed."""


class TaskNotFoundError(PersistenceError, LookupError):
    """No task with that id belongs to that user (another user's task counts as missing)."""

    def __init__(self, *, user_id: str, task_id: object) -> None:
        super().__init__(f"task {task_id!r} not found for user {user_id!r}")
        self.user_id = user_id
        self.task_id = task_id

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild from them (pickle, copy, multiprocessing).
        return (_rebuild_not_found, (self.user_id, self.task_id))


class TaskValidationError(PersistenceError, ValueError):
    """An argument was rejected before anything was sent to the database; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message))


def _rebuild_not_found(user_id: str, task_id: object) -> TaskNotFoundError:
    return TaskNotFoundError(user_id=user_id, task_id=task_id)


class DatabaseError(PersistenceError):
    """The database or the driver failed; the driver's error is chained as `__cause__`."""

    sqlstate: str | None = None


class IntegrityViolationError(DatabaseError):
    """The server rejected a write that breaks a constraint (SQLSTATE class 23)."""


class TransactionConflictError(DatabaseError):
    """Serialization failure or deadlock (40001, 40P01): running the work again may succeed."""


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached, or the connection was lost."""


class ConnectionLostError(DatabaseUnavailableError):
    """The connection died during a unit of work; its uncommitted work is lost, not committed."""


class CommitOutcomeUnknownError(ConnectionLostError):
    """The connection was lost while COMMIT was in flight: the work may or may not be saved.

    Never retried automatically; check the data before doing the work again.
    """


class DeadlineExceededError(DatabaseError, TimeoutError):
    """A statement ran past the unit of work's deadline, or waited that long for a lock
    (SQLSTATE 57014, 55P03); the server cancelled it. The transaction is aborted: end the
    unit of work (an exception out of the block rolls it back)."""


class AuthenticationError(DatabaseUnavailableError):
    """The server refused the credentials (SQLSTATE class 28); retrying will not help."""


class PoolTimeoutError(DatabaseUnavailableError):
    """No pooled connection became free within the pool timeout."""


_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Remember a secret (a password) so that `scrub` removes it from any text."""
    if secret:
        with _secrets_lock:
            _secrets.add(secret)


def scrub(text: str) -> str:
    """Return `text` with every registered secret replaced by `***`.

    A short password (under 8 characters) is replaced only where a password stands in a
    URL or connection string, so that "a" does not eat every "a" of a message.
    """
    for secret in sorted(_secrets, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, "***")
        else:
            text = text.replace(f":{secret}@", ":***@").replace(
                f"password={secret}", "password=***"
            )
    return text


# statement_timeout (query_canceled) and lock_timeout (lock_not_available).
_DEADLINE = {"57014", "55P03"}

# SQLSTATEs that mean the connection itself is gone (server shutdown, admin termination,
# crash), beside the whole of class 08 (connection exception).
# 25P03 and 57P05: the server ended a session idle in a transaction, or idle, too long.
_CONNECTION_GONE = {"57P01", "57P02", "57P03", "57P05", "25P03", "08000", "08003", "08006"}


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return getattr(orig, "sqlstate", None) if isinstance(orig, psycopg.Error) else None


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()
    return scrub(text[0]) if text else type(orig).__name__


# libpq reports a refused login while connecting without a SQLSTATE (psycopg gives
# `sqlstate=None`), so these phrases from libpq and the server are the only signal left.
_AUTH_PHRASES = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "password is required",
    "channel binding",
    'role "',
    "no pg_hba.conf entry",  # the server's rules let no such login in (SQLSTATE 28000)
)


def _is_auth_failure(exc: BaseException, state: str | None) -> bool:
    if state is not None:
        return state.startswith("28")
    text = str(exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc).lower()
    return any(phrase in text for phrase in _AUTH_PHRASES)


def is_disconnect(exc: BaseException) -> bool:
    """Whether `exc` says the connection is gone (as opposed to a statement that failed)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    # SQLAlchemy's "Can't reconnect until invalid transaction is rolled back": the
    # connection was lost earlier in this transaction (its documented error code).
    if isinstance(exc, sa_exc.PendingRollbackError) and exc.code == "8s2b":
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith("08") or state in _CONNECTION_GONE
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    # psycopg raises OperationalError without a SQLSTATE when the socket breaks.
    return isinstance(orig, psycopg.OperationalError)


def translate(
    exc: BaseException, action: str, *, connecting: bool = False, setting: str = "DATABASE_URL"
) -> PersistenceError:
    """Map a SQLAlchemy or psycopg error to this package's error, its message free of secrets.

    `connecting` says the error came while opening a new connection, so a network failure
    means "unreachable" rather than "lost"; `setting` names where the credentials came from.
    """
    if isinstance(exc, PersistenceError):
        return exc
    detail = _first_line(exc)
    state = _sqlstate(exc)
    error: DatabaseError
    if isinstance(exc, sa_exc.TimeoutError):
        error = PoolTimeoutError(
            f"{action}: no database connection became free in time (pool exhausted): {detail}"
        )
    elif _is_auth_failure(exc, state) and (connecting or state is not None):
        # libpq gives no SQLSTATE for a login refused while connecting: say none then.
        code = f" (SQLSTATE {state})" if state else ""
        error = AuthenticationError(
            f"{action}: the server refused the credentials in {setting}{code}: {detail}"
        )
    elif state in {"40001", "40P01"}:
        error = TransactionConflictError(f"{action}: transaction conflict ({state}): {detail}")
    elif state in _DEADLINE:
        error = DeadlineExceededError(
            f"{action}: past the unit of work's deadline, the server cancelled it "
            f"({state}): {detail}"
        )
    elif state is not None and state.startswith("23"):
        error = IntegrityViolationError(f"{action}: constraint violated ({state}): {detail}")
    elif connecting:
        error = DatabaseUnavailableError(f"{action}: could not connect to the database: {detail}")
    elif is_disconnect(exc):
        error = ConnectionLostError(f"{action}: the database connection was lost: {detail}")
    else:
        suffix = f" (SQLSTATE {state})" if state else ""
        error = DatabaseError(f"{action}: database error{suffix}: {detail}")
    error.sqlstate = state
    return error


@contextmanager
def driver_errors(action: str) -> Iterator[None]:
    """Re-raise any SQLAlchemy or psycopg error inside the block as a `PersistenceError`."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
        raise translate(exc, action) from exc
