"""The unit of work for asyncio callers: the sync contract, awaited."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from persistence import operations
from persistence.async_database import get_async_engine
from persistence.errors import PersistenceError
from persistence.models import Task
from persistence.operations import UNSET, Operation, _Unset
from persistence.unit_of_work_base import UnitOfWorkBase, default_binds

__all__ = ["AsyncTaskRepository", "AsyncUnitOfWork"]

T = TypeVar("T")
P = ParamSpec("P")


class AsyncUnitOfWork(UnitOfWorkBase[AsyncSession]):
    """One atomic piece of work for asyncio: `async with AsyncUnitOfWork() as uow:`.

    The contract of `UnitOfWork`, with every database call awaited: a clean exit commits;
    an exception rolls back everything since the last commit and propagates unchanged;
    `await commit()`, `await rollback()` and `async with savepoint():` as there. Results
    stay readable after the block. The same operations are sent, with the same round trips,
    validation, errors and replay of a first statement on a dead pooled connection.

    Cancellation (a timeout, a client that went away) rolls the work back; COMMIT, once
    sent, and the return of the connection to the pool are never interrupted: a
    cancellation that arrives meanwhile takes effect as soon as they are done. A unit of
    work belongs to the event loop that entered it, and runs one operation at a time:
    give each task its own (`PersistenceError` otherwise).

    `bind` is an `AsyncEngine` (default: the running loop's, from `DATABASE_URL`) or an
    `AsyncConnection` already in a transaction, which the unit of work joins with
    savepoints (for tests). Raises `TaskValidationError` for an unknown `isolation_level`.
    """

    _block = "async with AsyncUnitOfWork() as uow:"
    _wrong_owner = (
        "an async unit of work belongs to the event loop that entered it: give each thread "
        "and each event loop its own AsyncUnitOfWork"
    )

    def __init__(
        self,
        bind: AsyncEngine | AsyncConnection | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(bind, isolation_level=isolation_level, read_only=read_only)
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = AsyncTaskRepository(self._run)

    @staticmethod
    def _current_owner() -> object:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:  # no loop running in this thread
            return None

    async def __aenter__(self) -> Self:
        bind = self._bind if self._bind is not None else default_binds["async"]
        if bind is None:
            bind = await get_async_engine()
        joined = isinstance(bind, AsyncConnection)
        self._start(self._new_session(AsyncSession, bind, joined=joined))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._active_session()
        try:
            # An operation still running (one of two started at once, say) finishes
            # first: the end of the block must not race it for the connection.
            await _uninterrupted(self._idle.wait())
            await _uninterrupted(self._step(session, self._end_on, exc_type is not None))
        finally:
            self._stop()

    @property
    def tasks(self) -> AsyncTaskRepository:
        """The task repository; raises `PersistenceError` outside an active block."""
        self._active_session()
        return self._tasks

    async def commit(self) -> None:
        """Commit the work so far; the block goes on in a new transaction.

        Raises a `PersistenceError` subclass if the commit fails (nothing is committed then),
        or `CommitOutcomeUnknownError` if the connection was lost while COMMIT was in flight.
        """
        session = self._active_session()
        await _uninterrupted(self._step(session, self._commit_on))

    async def rollback(self) -> None:
        """Discard the work since the last commit; the block goes on in a new transaction.

        Raises `PersistenceError` outside an active block, or a subclass if the server fails.
        """
        await self._step(self._active_session(), self._rollback_on)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A SAVEPOINT: an exception inside undoes only the work inside, then propagates.

        Raises `PersistenceError` outside an active block, or a subclass if the server fails.
        """
        session = self._active_session()
        nested = await self._step(session, self._open_savepoint)
        try:
            yield
        except BaseException as exc:
            if self._session is session:  # else the block already ended, and rolled back
                await self._step(session, self._close_savepoint, nested, exc)
            raise
        if self._session is session:
            await self._step(session, self._close_savepoint, nested, None)

    async def _run(self, operation: Operation[T]) -> T:
        return await self._step(self._active_session(), self._run_on, operation)

    async def _step(
        self,
        session: AsyncSession,
        step: Callable[Concatenate[Session, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        # The shared sync step runs in SQLAlchemy's greenlet, awaiting the driver there.
        if self._busy:
            raise PersistenceError(
                "this unit of work is already running an operation: await each one before "
                "the next, and give each concurrent task its own AsyncUnitOfWork"
            )
        self._busy = True
        self._idle.clear()
        try:
            return await session.run_sync(step, *args, **kwargs)
        finally:
            self._busy = False
            self._idle.set()


async def _uninterrupted(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the caller is cancelled meanwhile, then let the
    cancellation through (a COMMIT once sent; a connection on its way back to the pool)."""
    task = asyncio.ensure_future(work)
    interruption: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            interruption = exc
    if interruption is not None:
        if not task.cancelled() and task.exception() is not None:
            interruption.__context__ = task.exception()
        raise interruption
    return task.result()


class AsyncTaskRepository:
    """`TaskRepository`'s operations, awaited: the same validation, scoping and errors (each
    method raises exactly what its `TaskRepository` twin documents).

    Obtain it as `uow.tasks` inside `async with AsyncUnitOfWork() as uow:`; see
    `TaskRepository` for what each method does and raises.
    """

    def __init__(self, run: Callable[[Operation[Any]], Awaitable[Any]]) -> None:
        self._run = run

    async def create(self, *, user_id: str, title: str, description: str | None = None) -> Task:
        """Add a task for `user_id` (title stripped of surrounding whitespace) and return it."""
        task: Task = await self._run(
            operations.create_task(user_id=user_id, title=title, description=description)
        )
        return task

    async def create_many(
        self, *, user_id: str, items: Sequence[Mapping[str, Any]]
    ) -> builtins.list[Task]:
        """Add many tasks for `user_id` in one statement; return them in the items' order."""
        tasks: builtins.list[Task] = await self._run(
            operations.create_tasks(user_id=user_id, items=items)
        )
        return tasks

    async def get(self, *, user_id: str, task_id: int) -> Task | None:
        """Return the task, or `None` if `user_id` has no task with that id."""
        task: Task | None = await self._run(operations.get_task(user_id=user_id, task_id=task_id))
        return task

    async def list(
        self,
        *,
        user_id: str,
        complete: bool | None = None,
        limit: int | None = 50,
        after: Task | None = None,
    ) -> builtins.list[Task]:
        """Return `user_id`'s tasks newest first, at most `limit`; `after` pages on."""
        tasks: builtins.list[Task] = await self._run(
            operations.list_tasks(user_id=user_id, complete=complete, limit=limit, after=after)
        )
        return tasks

    async def count(self, *, user_id: str, complete: bool | None = None) -> int:
        """Return how many tasks `user_id` has (only those in state `complete`, if given)."""
        counted: int = await self._run(operations.count_tasks(user_id=user_id, complete=complete))
        return counted

    async def update(
        self,
        *,
        user_id: str,
        task_id: int,
        title: str | _Unset = UNSET,
        description: str | _Unset | None = UNSET,
        complete: bool | _Unset = UNSET,
    ) -> Task:
        """Change only the fields passed (`description=None` clears it); return the task."""
        task: Task = await self._run(
            operations.update_task(
                user_id=user_id,
                task_id=task_id,
                title=title,
                description=description,
                complete=complete,
            )
        )
        return task

    async def toggle_complete(self, *, user_id: str, task_id: int) -> Task:
        """Flip the task's `complete` flag in one statement and return the task."""
        task: Task = await self._run(operations.toggle_task(user_id=user_id, task_id=task_id))
        return task

    async def delete(self, *, user_id: str, task_id: int) -> None:
        """Delete the task. Raises `TaskNotFoundError` if `user_id` has no task with that id."""
        await self._run(operations.delete_task(user_id=user_id, task_id=task_id))
