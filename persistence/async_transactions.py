"""`run_in_transaction_async`: `run_in_transaction` for asyncio, with the same retry rules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.async_unit_of_work import AsyncUnitOfWork
from persistence.transactions import attempts_of

__all__ = ["run_in_transaction_async"]

T = TypeVar("T")


async def run_in_transaction_async(
    fn: Callable[[AsyncUnitOfWork], Awaitable[T]],
    *,
    attempts: int = 3,
    isolation_level: str | None = None,
    read_only: bool = False,
    bind: AsyncEngine | AsyncConnection | None = None,
    backoff: float = 0.05,
    max_backoff: float = 1.0,
) -> T:
    """Run `await fn(uow)` in an `AsyncUnitOfWork`, commit, and return its result.

    The rules of `run_in_transaction`: run again, up to `attempts` times in all with
    jittered exponential backoff (awaited, never blocking the loop), on a serialization
    failure (40001), a deadlock (40P01) or a connection lost before COMMIT was sent; `fn`
    must be safe to run more than once. The application's own exceptions, cancellation,
    `CommitOutcomeUnknownError` and `AuthenticationError` propagate after one run. The
    last retryable error propagates when the attempts run out.
    """
    for attempt in attempts_of(attempts, backoff, max_backoff):
        with attempt:
            async with AsyncUnitOfWork(
                bind, isolation_level=isolation_level, read_only=read_only
            ) as uow:
                return await fn(uow)
        await asyncio.sleep(attempt.delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
