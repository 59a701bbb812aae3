"""User-scoped task operations, run by the unit of work; it never commits or rolls back."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from persistence import operations
from persistence.models import Task
from persistence.operations import UNSET, Operation, _Unset

__all__ = ["UNSET", "Runner", "TaskRepository"]

T = TypeVar("T")


class Runner(Protocol):
    """Sends an operation's statement in the current transaction and reads its result."""

    def __call__(self, operation: Operation[T], /) -> T: ...


class TaskRepository:
    """One user's tasks at a time: every method takes `user_id` and touches no one else's rows.

    Every argument is validated before any SQL is sent: bad input raises
    `TaskValidationError` naming the field and leaves the unit of work usable. Driver and
    server failures raise a `PersistenceError` subclass with the original chained. Each
    returned `Task` is a snapshot: readable after the block, unchanged by later operations.
    Obtain it as `uow.tasks` inside `with UnitOfWork() as uow:`; using it after the block
    raises `PersistenceError`.
    """

    def __init__(self, run: Runner) -> None:
        self._run = run

    def create(self, *, user_id: str, title: str, description: str | None = None) -> Task:
        """Add a task for `user_id` (title stripped of surrounding whitespace) and return it.

        Raises `TaskValidationError` naming the bad field, before any SQL.
        """
        return self._run(
            operations.create_task(user_id=user_id, title=title, description=description)
        )

    def create_many(
        self, *, user_id: str, items: Sequence[Mapping[str, Any]]
    ) -> builtins.list[Task]:
        """Add many tasks for `user_id` in one statement; return them in the items' order.

        Each item is `{"title": ..., "description": ...}` (description optional). Every item
        is validated first: one bad item raises `TaskValidationError` naming it (for example
        `items[3].title`) and nothing is written.
        """
        return self._run(operations.create_tasks(user_id=user_id, items=items))

    def get(self, *, user_id: str, task_id: int) -> Task | None:
        """Return the task, or `None` if `user_id` has no task with that id (or the id can't
        exist). Raises `TaskValidationError` if `task_id` is not an int."""
        return self._run(operations.get_task(user_id=user_id, task_id=task_id))

    def list(
        self,
        *,
        user_id: str,
        complete: bool | None = None,
        limit: int | None = 50,
        after: Task | None = None,
    ) -> builtins.list[Task]:
        """Return `user_id`'s tasks newest first (by `created_at`, then `id`), at most `limit`.

        `complete=True` or `False` keeps only tasks in that state. `limit` is capped at
        `LIST_LIMIT_MAX` (100,000); `limit=None` means all of them, and raises
        `TaskValidationError` (naming `limit`) if there are more than `LIST_LIMIT_MAX`:
        walk those with `iterate()`. `after=<the last Task of the previous page>` returns
        the next page (keyset pagination: page 200 costs what page 1 does). Raises
        `TaskValidationError` for a bad argument.
        """
        return self._run(
            operations.list_tasks(user_id=user_id, complete=complete, limit=limit, after=after)
        )

    def iterate(
        self, *, user_id: str, complete: bool | None = None, page_size: int = 1000
    ) -> Iterator[Task]:
        """Walk all of `user_id`'s tasks newest first, `page_size` at a time (one keyset
        page per query, in this unit of work): memory stays one page, however many.

        Arguments are checked now: `TaskValidationError` for a bad one. Each page is read
        when the iteration reaches it, so tasks committed meanwhile by others may or may
        not appear (none appears twice, none present throughout is missed).
        """
        next_page = operations.pages_of(user_id, complete, operations.page_size(page_size))
        return self._pages(next_page)

    def _pages(self, next_page: operations.NextPage) -> Iterator[Task]:
        page: builtins.list[Task] | None = None
        while (operation := next_page(page)) is not None:
            page = self._run(operation)
            yield from page

    def count(self, *, user_id: str, complete: bool | None = None) -> int:
        """Return how many tasks `user_id` has (only those in state `complete`, if given).

        Raises `TaskValidationError` for a bad argument.
        """
        return self._run(operations.count_tasks(user_id=user_id, complete=complete))

    def update(
        self,
        *,
        user_id: str,
        task_id: int,
        title: str | _Unset = UNSET,
        description: str | _Unset | None = UNSET,
        complete: bool | _Unset = UNSET,
    ) -> Task:
        """Change only the fields passed (`description=None` clears it); return the task.

        `updated_at` advances, `created_at` never changes. Raises `TaskNotFoundError` if
        `user_id` has no task with that id.
        """
        return self._run(
            operations.update_task(
                user_id=user_id,
                task_id=task_id,
                title=title,
                description=description,
                complete=complete,
            )
        )

    def toggle_complete(self, *, user_id: str, task_id: int) -> Task:
        """Flip the task's `complete` flag in one statement and return the task.

        Raises `TaskNotFoundError` if `user_id` has no task with that id.
        """
        return self._run(operations.toggle_task(user_id=user_id, task_id=task_id))

    def delete(self, *, user_id: str, task_id: int) -> None:
        """Delete the task. Raises `TaskNotFoundError` if `user_id` has no task with that id."""
        self._run(operations.delete_task(user_id=user_id, task_id=task_id))
