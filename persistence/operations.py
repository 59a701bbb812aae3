"""Each repository operation, written once: validate, pick the statement, read the rows.

The sync and async units of work differ only in how they run an `Operation`; what is sent
and what comes back is decided here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from persistence import statements
from persistence.errors import TaskNotFoundError, TaskValidationError
from persistence.models import (
    LIST_LIMIT_MAX,
    Task,
    TaskChanges,
    TaskCreate,
    check_after,
    check_flag,
    check_items,
    check_limit,
    check_page_size,
    check_task_id,
    check_user_id,
    plain_title,
    validate,
)
from persistence.rows import TaskRows
from persistence.statements import Statement

__all__ = [
    "LIST_LIMIT_MAX",
    "UNSET",
    "NextPage",
    "Operation",
    "count_tasks",
    "create_task",
    "create_tasks",
    "delete_task",
    "get_task",
    "list_tasks",
    "page_size",
    "pages_of",
    "toggle_task",
    "too_many_tasks",
    "update_task",
]

T = TypeVar("T")

Rows = list[Any]


class _Unset:
    """Marks an `update` argument that was not passed (so the field is left as it is)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(slots=True)  # not frozen: one is made for every call, and frozen costs more
class Operation(Generic[T]):
    """A validated request: the statement to send, its parameters, and how to read it
    (never changed once made)."""

    action: str
    """What is being done, for error messages ("creating a task")."""
    statement: Statement | None
    """`None` when the answer is known without asking (an id that cannot exist)."""
    args: tuple[Any, ...]
    """The statement's parameters, in order."""
    read: Callable[[Rows | None], T]
    """The answer, from the rows the statement returned."""
    rows: TaskRows | None = None
    """How psycopg builds each row: a `Task` of the user, or a plain tuple (`None`)."""
    writes: bool = False
    """Whether the statement changes data (it begins the transaction)."""
    request: tuple[str, dict[str, Any]] = ("", {})
    """The same request as plain validated values, for the in-memory fake unit of work."""


def _known(action: str, answer: Callable[[], T]) -> Operation[T]:
    return Operation(action, None, (), lambda _rows: answer())


def _not_found(user_id: str, task_id: object) -> Callable[[], Any]:
    def raise_it() -> Any:
        raise TaskNotFoundError(user_id=user_id, task_id=task_id)

    return raise_it


def _one_task_or_not_found(user_id: str, task_id: object) -> Callable[[Rows | None], Task]:
    def read(rows: Rows | None) -> Task:
        if not rows:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)
        task: Task = rows[0]
        return task

    return read


def _first_task(rows: Rows | None) -> Task:
    assert rows
    task: Task = rows[0]
    return task


def _first_or_none(rows: Rows | None) -> Task | None:
    return rows[0] if rows else None


def _all(rows: Rows | None) -> list[Task]:
    return rows if rows is not None else []


def create_task(*, user_id: object, title: object, description: object) -> Operation[Task]:
    """INSERT one task after validating every field."""
    stripped = plain_title(title, description)
    if stripped is None:  # not plainly valid: the model validates, and names what is wrong
        data = validate(
            TaskCreate, {"user_id": user_id, "title": title, "description": description}
        )
        user, stripped, description = data.user_id, data.title, data.description
    else:
        user = check_user_id(user_id)
    values = {"user_id": user, "title": stripped, "description": description}
    return Operation(
        "creating a task",
        statements.insert_task(),
        (user, stripped, description),
        _first_task,
        TaskRows(user),
        writes=True,
        request=("create", values),
    )


def get_task(*, user_id: object, task_id: object) -> Operation[Task | None]:
    """SELECT one task of one user; `None` when it is not theirs or does not exist."""
    user = check_user_id(user_id)
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("reading a task", lambda: None)
    return Operation(
        "reading a task",
        statements.select_task(),
        (user, found_id),
        _first_or_none,
        TaskRows(user),
        request=("get", {"user_id": user, "task_id": found_id}),
    )


def create_tasks(*, user_id: object, items: object) -> Operation[list[Task]]:
    """INSERT many tasks in one statement, after validating every one of them."""
    user = check_user_id(user_id)
    titles, descriptions = check_items(items)
    if not titles:
        return _known("creating tasks", list)
    return Operation(
        "creating tasks",
        statements.insert_tasks(),
        (user, titles, descriptions),
        _all,
        TaskRows(user),
        writes=True,
        request=("create_many", {"user_id": user, "titles": titles, "descriptions": descriptions}),
    )


def list_tasks(
    *, user_id: object, complete: object, limit: object, after: object = None
) -> Operation[list[Task]]:
    """SELECT a user's tasks, newest first; `after` continues from a previous page.

    `limit=None` means all of them: at most `LIST_LIMIT_MAX`, and `TaskValidationError`
    (naming `limit`) when there are more, never a silently cut list.
    """
    user = check_user_id(user_id)
    flag = check_flag("complete", complete, optional=True)
    cap = check_limit(limit)
    position = check_after(after)
    statement = statements.select_tasks(complete=flag is not None, limit=True, after=bool(position))
    args: list[Any] = [user]
    if flag is not None:
        args.append(flag)
    if position is not None:
        args.extend(position)
    # For "all", one row more than the most allowed tells whether there are more.
    args.append(LIST_LIMIT_MAX + 1 if cap is None else cap)
    return Operation(
        "listing tasks",
        statement,
        tuple(args),
        _all if cap is not None else _at_most_the_maximum,
        TaskRows(user),
        request=("list", {"user_id": user, "complete": flag, "limit": cap, "after": position}),
    )


def _at_most_the_maximum(rows: Rows | None) -> list[Task]:
    if rows is not None and len(rows) > LIST_LIMIT_MAX:
        raise too_many_tasks()
    return _all(rows)


def too_many_tasks() -> TaskValidationError:
    """The error for `limit=None` when the user has more tasks than one list may hold."""
    return TaskValidationError(
        "limit",
        f"None asks for all of them, and there are more than {LIST_LIMIT_MAX}: walk them "
        "with iterate(), or page with limit= and after=",
    )


def count_tasks(*, user_id: object, complete: object) -> Operation[int]:
    """SELECT count(*) of a user's tasks."""
    user = check_user_id(user_id)
    flag = check_flag("complete", complete, optional=True)
    args = (user,) if flag is None else (user, flag)
    return Operation(
        "counting tasks",
        statements.count_tasks(complete=flag is not None),
        args,
        lambda rows: int(rows[0][0]) if rows else 0,
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
    statement = statements.update_task(frozenset(changes))
    args = statement.args({**changes, "user_id": user, "task_id": found_id})
    return Operation(
        "updating a task",
        statement,
        args,
        _one_task_or_not_found(user, task_id),
        TaskRows(user),
        writes=True,
        request=("update", {"user_id": user, "task_id": found_id, "changes": changes}),
    )


def toggle_task(*, user_id: object, task_id: object) -> Operation[Task]:
    """Flip `complete` in one UPDATE ... RETURNING (never read-modify-write)."""
    user = check_user_id(user_id)
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("toggling a task", _not_found(user, task_id))
    statement = statements.toggle_task()
    return Operation(
        "toggling a task",
        statement,
        statement.args({"user_id": user, "task_id": found_id}),
        _one_task_or_not_found(user, task_id),
        TaskRows(user),
        writes=True,
        request=("toggle", {"user_id": user, "task_id": found_id}),
    )


def delete_task(*, user_id: object, task_id: object) -> Operation[None]:
    """DELETE one task of one user; `TaskNotFoundError` when nothing was deleted."""
    user = check_user_id(user_id)
    found_id = check_task_id(task_id)
    if found_id is None:
        return _known("deleting a task", _not_found(user, task_id))

    def read(rows: Rows | None) -> None:
        if not rows:
            raise TaskNotFoundError(user_id=user, task_id=task_id)

    return Operation(
        "deleting a task",
        statements.delete_task(),
        (user, found_id),
        read,
        writes=True,
        request=("delete", {"user_id": user, "task_id": found_id}),
    )


def page_size(value: object) -> int:
    """Validate `iterate()`'s page size (1 to `LIST_LIMIT_MAX`)."""
    return check_page_size(value)


NextPage = Callable[[Sequence[Task] | None], "Operation[list[Task]] | None"]


def pages_of(user_id: object, complete: object, size: int) -> NextPage:
    """The operations that walk a user's tasks a page at a time: call it with the previous
    page (`None` first); it gives the next page's operation, or `None` when done."""
    user = check_user_id(user_id)
    flag = check_flag("complete", complete, optional=True)

    def next_page(previous: Sequence[Task] | None) -> Operation[list[Task]] | None:
        if previous is None:
            return list_tasks(user_id=user, complete=flag, limit=size)
        if len(previous) < size:
            return None
        return list_tasks(user_id=user, complete=flag, limit=size, after=previous[-1])

    return next_page
