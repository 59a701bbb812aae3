"""Each repository operation, written once: validate, build the statement, read the result.

The sync and async units of work differ only in how they run an `Operation`; what is sent
and what comes back is decided here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import Executable, Result

from persistence import statements
from persistence.errors import TaskNotFoundError
from persistence.models import (
    Task,
    TaskChanges,
    TaskCreate,
    check_after,
    check_flag,
    check_items,
    check_limit,
    check_task_id,
    check_user_id,
    validate,
)

__all__ = [
    "UNSET",
    "Operation",
    "count_tasks",
    "create_task",
    "create_tasks",
    "delete_task",
    "get_task",
    "list_tasks",
    "toggle_task",
    "update_task",
]

T = TypeVar("T")


class _Unset:
    """Marks an `update` argument that was not passed (so the field is left as it is)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True)
class Operation(Generic[T]):
    """A validated request: the statement to send and how to read its result."""

    action: str
    """What is being done, for error messages ("creating a task")."""
    statement: Executable | None
    """`None` when the answer is known without asking (an id that cannot exist)."""
    read: Callable[[Result[Any] | None], T]
    writes: bool = False
    """Whether the statement changes data (so a lost COMMIT leaves its outcome unknown)."""
    request: tuple[str, dict[str, Any]] = ("", {})
    """The same request as plain validated values, for the in-memory fake unit of work."""


def _known(action: str, answer: Callable[[], T]) -> Operation[T]:
    return Operation(action, None, lambda _result: answer())


def _not_found(user_id: str, task_id: object) -> Callable[[], Any]:
    def raise_it() -> Any:
        raise TaskNotFoundError(user_id=user_id, task_id=task_id)

    return raise_it


def _one_task_or_not_found(user_id: str, task_id: object) -> Callable[[Result[Any] | None], Task]:
    def read(result: Result[Any] | None) -> Task:
        task = result.scalars().first() if result is not None else None
        if task is None:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)
        assert isinstance(task, Task)
        return task

    return read


def create_task(*, user_id: object, title: object, description: object) -> Operation[Task]:
    """INSERT one task after validating every field."""
    data = validate(TaskCreate, {"user_id": user_id, "title": title, "description": description})
    values = data.model_dump()
    statement = statements.insert_task(values)
    return Operation(
        "creating a task", statement, _first_task, writes=True, request=("create", values)
    )


def _first_task(result: Result[Any] | None) -> Task:
    assert result is not None
    task = result.scalar_one()
    assert isinstance(task, Task)
    return task


def get_task(*, user_id: object, task_id: object) -> Operation[Task | None]:
    """SELECT one task of one user; `None` when it is not theirs or does not exist."""
    user = check_user_id(user_id)
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("reading a task", lambda: None)
    return Operation(
        "reading a task",
        statements.select_task(user, found_id),
        lambda result: result.scalars().first() if result is not None else None,
        request=("get", {"user_id": user, "task_id": found_id}),
    )


def create_tasks(*, user_id: object, items: object) -> Operation[list[Task]]:
    """INSERT many tasks in one statement, after validating every one of them."""
    user = check_user_id(user_id)
    rows = check_items(items)
    if not rows:
        return _known("creating tasks", list)
    titles, descriptions = [row.title for row in rows], [row.description for row in rows]
    return Operation(
        "creating tasks",
        statements.insert_tasks(user, titles, descriptions),
        lambda result: list(result.scalars().all()) if result is not None else [],
        writes=True,
        request=("create_many", {"user_id": user, "titles": titles, "descriptions": descriptions}),
    )


def list_tasks(
    *, user_id: object, complete: object, limit: object, after: object = None
) -> Operation[list[Task]]:
    """SELECT a user's tasks, newest first; `after` continues from a previous page."""
    user = check_user_id(user_id)
    flag = check_flag("complete", complete, optional=True)
    cap = check_limit(limit)
    position = check_after(after)
    return Operation(
        "listing tasks",
        statements.select_tasks(user, flag, cap, position),
        lambda result: list(result.scalars().all()) if result is not None else [],
        request=(
            "list",
            {"user_id": user, "complete": flag, "limit": cap, "after": position},
        ),
    )


def count_tasks(*, user_id: object, complete: object) -> Operation[int]:
    """SELECT count(*) of a user's tasks."""
    user = check_user_id(user_id)
    flag = check_flag("complete", complete, optional=True)
    return Operation(
        "counting tasks",
        statements.count_tasks(user, flag),
        lambda result: int(result.scalar_one()) if result is not None else 0,
        request=("count", {"user_id": user, "complete": flag}),
    )


def update_task(
    *, user_id: object, task_id: object, title: object, description: object, complete: object
) -> Operation[Task]:
    """UPDATE only the fields given (those not `UNSET`), RETURNING the task."""
    user = check_user_id(user_id)
    passed = {"title": title, "description": description, "complete": complete}
    given = {name: value for name, value in passed.items() if value is not UNSET}
    changes = validate(TaskChanges, given).model_dump(include=set(given))
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("updating a task", _not_found(user, task_id))
    return Operation(
        "updating a task",
        statements.update_task(user, found_id, changes),
        _one_task_or_not_found(user, task_id),
        writes=True,
        request=("update", {"user_id": user, "task_id": found_id, "changes": changes}),
    )


def toggle_task(*, user_id: object, task_id: object) -> Operation[Task]:
    """Flip `complete` in one UPDATE ... RETURNING (never read-modify-write)."""
    user = check_user_id(user_id)
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("toggling a task", _not_found(user, task_id))
    return Operation(
        "toggling a task",
        statements.toggle_task(user, found_id),
        _one_task_or_not_found(user, task_id),
        writes=True,
        request=("toggle", {"user_id": user, "task_id": found_id}),
    )


def delete_task(*, user_id: object, task_id: object) -> Operation[None]:
    """DELETE one task of one user; `TaskNotFoundError` when nothing was deleted."""
    user = check_user_id(user_id)
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("deleting a task", _not_found(user, task_id))

    def read(result: Result[Any] | None) -> None:
        if result is None or result.first() is None:
            raise TaskNotFoundError(user_id=user, task_id=task_id)

    return Operation(
        "deleting a task",
        statements.delete_task(user, found_id),
        read,
        writes=True,
        request=("delete", {"user_id": user, "task_id": found_id}),
    )
