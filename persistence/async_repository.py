"""The async task repository: `TaskRepository`'s operations, awaited."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from persistence import operations
from persistence.models import Task
from persistence.operations import UNSET, Operation, _Unset

__all__ = ["AsyncTaskRepository"]


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

    def iterate(
        self, *, user_id: str, complete: bool | None = None, page_size: int = 1000
    ) -> AsyncIterator[Task]:
        """Walk all of `user_id`'s tasks newest first, a page at a time:
        `async for task in uow.tasks.iterate(user_id=...)`. Arguments are checked now."""
        next_page = operations.pages_of(user_id, complete, operations.page_size(page_size))
        return self._pages(next_page)

    async def _pages(self, next_page: operations.NextPage) -> AsyncIterator[Task]:
        page: builtins.list[Task] | None = None
        while (operation := next_page(page)) is not None:
            page = await self._run(operation)
            for task in page:
                yield task

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
