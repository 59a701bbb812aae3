"""User-scoped task operations on the unit of work's session; it never commits or rolls back."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, Final, cast

from sqlmodel import Session

from persistence import statements
from persistence.errors import TaskNotFoundError, driver_errors
from persistence.models import (
    Task,
    TaskChanges,
    TaskCreate,
    check_flag,
    check_limit,
    check_task_id,
    check_user_id,
    validate,
)

__all__ = ["UNSET", "TaskRepository"]


class _Unset:
    """Marks an `update` argument that was not passed (so the field is left as it is)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def _snapshot(session: Session, task: Any) -> Task:
    # Each result is the row as it was when read, detached from the session: a later
    # update can't change a Task the caller already holds, and setting attributes on it
    # can't write to the database behind validation's back.
    session.expunge(task)
    return cast(Task, task)


class TaskRepository:
    """One user's tasks at a time: every method takes `user_id` and touches no one else's rows.

    Every argument is validated before any SQL is sent: bad input raises
    `TaskValidationError` naming the field and leaves the unit of work usable. Driver and
    server failures raise a `PersistenceError` subclass with the original chained.
    Obtain it as `uow.tasks` inside `with UnitOfWork() as uow:`.
    """

    def __init__(self, session: Callable[[], Session]) -> None:
        # A callable, not a session: it raises once the unit of work has ended, so a
        # repository kept past its block can't quietly write outside a transaction.
        self._session = session

    def create(self, *, user_id: str, title: str, description: str | None = None) -> Task:
        """Add a task for `user_id` (title stripped of surrounding whitespace) and return it."""
        fields = {"user_id": user_id, "title": title, "description": description}
        data = validate(TaskCreate, fields)
        session = self._session()
        with driver_errors("creating a task"):
            task = session.exec(statements.insert_task(data.model_dump())).scalar_one()
        return _snapshot(session, task)

    def get(self, *, user_id: str, task_id: int) -> Task | None:
        """Return the task, or `None` if `user_id` has no task with that id."""
        user_id = check_user_id(user_id)
        found_id = check_task_id(task_id)
        if found_id is None:
            return None
        session = self._session()
        with driver_errors("reading a task"):
            task = session.exec(statements.select_task(user_id, found_id)).first()
        return None if task is None else _snapshot(session, task)

    def list(
        self, *, user_id: str, complete: bool | None = None, limit: int | None = 50
    ) -> builtins.list[Task]:
        """Return `user_id`'s tasks newest first (by `created_at`, then `id`), at most `limit`.

        `complete=True` or `False` keeps only tasks in that state; `limit=None` means no cap.
        """
        user_id = check_user_id(user_id)
        flag = check_flag("complete", complete, optional=True)
        cap = check_limit(limit)
        session = self._session()
        with driver_errors("listing tasks"):
            tasks = session.exec(statements.select_tasks(user_id, flag, cap)).all()
        return [_snapshot(session, task) for task in tasks]

    def count(self, *, user_id: str, complete: bool | None = None) -> int:
        """Return how many tasks `user_id` has (only those in state `complete`, if given)."""
        user_id = check_user_id(user_id)
        flag = check_flag("complete", complete, optional=True)
        with driver_errors("counting tasks"):
            return int(self._session().exec(statements.count_tasks(user_id, flag)).one())

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
        user_id = check_user_id(user_id)
        passed = {"title": title, "description": description, "complete": complete}
        given = {name: value for name, value in passed.items() if value is not UNSET}
        changes = validate(TaskChanges, given).model_dump(include=set(given))
        found_id = self._existing_id(user_id, task_id)
        return self._returning_task(
            statements.update_task(user_id, found_id, changes), user_id, task_id, "updating a task"
        )

    def toggle_complete(self, *, user_id: str, task_id: int) -> Task:
        """Flip the task's `complete` flag in one statement and return the task.

        Raises `TaskNotFoundError` if `user_id` has no task with that id.
        """
        user_id = check_user_id(user_id)
        found_id = self._existing_id(user_id, task_id)
        return self._returning_task(
            statements.toggle_task(user_id, found_id), user_id, task_id, "toggling a task"
        )

    def delete(self, *, user_id: str, task_id: int) -> None:
        """Delete the task. Raises `TaskNotFoundError` if `user_id` has no task with that id."""
        user_id = check_user_id(user_id)
        found_id = self._existing_id(user_id, task_id)
        with driver_errors("deleting a task"):
            deleted = self._session().exec(statements.delete_task(user_id, found_id)).first()
        if deleted is None:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)

    def _existing_id(self, user_id: str, task_id: object) -> int:
        found_id = check_task_id(task_id)
        if found_id is None:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)
        return found_id

    def _returning_task(self, statement: Any, user_id: str, task_id: int, action: str) -> Task:
        session = self._session()
        with driver_errors(action):
            task = session.exec(statement).scalars().first()
        if task is None:
            raise TaskNotFoundError(user_id=user_id, task_id=task_id)
        return _snapshot(session, task)
