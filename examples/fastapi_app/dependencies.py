"""One unit of work per request, committed before the response is sent.

`scope="function"` (FastAPI 0.121 and later) ends the dependency, and so the unit of
work's block, as soon as the path operation has returned, before FastAPI sends the
response. A COMMIT that fails there raises through the exception handlers, so the client
gets an error status, never a 2xx for work that was not saved. With the default
`scope="request"`, the code after `yield` runs after the response has gone out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends

from persistence import AsyncUnitOfWork, UnitOfWork


def get_uow() -> Iterator[UnitOfWork]:
    """A `UnitOfWork` for a sync path operation: committed on success, else rolled back.

    FastAPI enters and leaves it on threadpool threads that may differ; the unit of work
    allows that, one operation at a time.
    """
    with UnitOfWork() as uow:
        yield uow


async def get_async_uow() -> AsyncIterator[AsyncUnitOfWork]:
    """An `AsyncUnitOfWork` for an async path operation, on the server's event loop."""
    async with AsyncUnitOfWork() as uow:
        yield uow


SyncUnit = Annotated[UnitOfWork, Depends(get_uow, scope="function")]
"""A path operation's sync unit of work; its block ends before the response is sent."""

AsyncUnit = Annotated[AsyncUnitOfWork, Depends(get_async_uow, scope="function")]
"""A path operation's async unit of work; its block ends before the response is sent."""
