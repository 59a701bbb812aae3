"""`run_in_transaction`: a unit of work run again when the server says running it again is safe."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy import Connection, Engine

from persistence.errors import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    TaskValidationError,
    TransactionConflictError,
)
from persistence.unit_of_work import UnitOfWork

__all__ = ["RETRYABLE", "Attempt", "attempts_of", "backoff_delays", "run_in_transaction"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE: tuple[type[Exception], ...] = (TransactionConflictError, ConnectionLostError)
"""Serialization failure (40001), deadlock (40P01), connection lost before COMMIT was sent."""


def backoff_delays(attempts: int, base: float, cap: float) -> list[float]:
    """The pauses between `attempts` runs: exponential from `base`, capped, with full jitter."""
    return [random.uniform(0, min(cap, base * 2**n)) for n in range(attempts - 1)]


def check_attempts(attempts: object) -> int:
    """Return `attempts` if it is an int >= 1, else raise `TaskValidationError`."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise TaskValidationError("attempts", f"must be an int >= 1, got {attempts!r}")
    return attempts


class Attempt:
    """One run of the work. As a context manager, it swallows an error that makes running
    the work again safe, unless this run was the last; the caller then waits `delay`."""

    def __init__(self, number: int, total: int, delay: float) -> None:
        self.number = number
        self.total = total
        self.delay = delay

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if (
            exc is None
            or isinstance(exc, CommitOutcomeUnknownError)
            or not isinstance(exc, RETRYABLE)
            or self.number == self.total
        ):
            return False
        logger.info(
            "attempt %d of %d failed (%s); running it again in %.0f ms",
            self.number,
            self.total,
            type(exc).__name__,
            self.delay * 1000,
        )
        return True


def attempts_of(attempts: object, backoff: float, max_backoff: float) -> Iterator[Attempt]:
    """The runs of a unit of work run by `run_in_transaction` (or its async twin).

    Raises `TaskValidationError` unless `attempts` is an int >= 1.
    """
    total = check_attempts(attempts)
    delays = [*backoff_delays(total, backoff, max_backoff), 0.0]
    for number in range(1, total + 1):
        yield Attempt(number, total, delays[number - 1])


def run_in_transaction(
    fn: Callable[[UnitOfWork], T],
    *,
    attempts: int = 3,
    isolation_level: str | None = None,
    read_only: bool = False,
    bind: Engine | Connection | None = None,
    backoff: float = 0.05,
    max_backoff: float = 1.0,
) -> T:
    """Run `fn(uow)` in a unit of work, commit, and return its result.

    Runs it again, up to `attempts` times in all with jittered exponential backoff, on a
    serialization failure (40001), a deadlock (40P01) or a connection lost before COMMIT
    was sent; `fn` must therefore be safe to run more than once. The application's own
    exceptions propagate after one run, and so does `CommitOutcomeUnknownError` (the
    connection dropped while COMMIT was in flight: the outcome is unknown, so it is never
    guessed at or retried) and `AuthenticationError`. The last retryable error propagates
    when the attempts run out.
    """
    for attempt in attempts_of(attempts, backoff, max_backoff):
        with attempt, UnitOfWork(bind, isolation_level=isolation_level, read_only=read_only) as uow:
            return fn(uow)
        time.sleep(attempt.delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
