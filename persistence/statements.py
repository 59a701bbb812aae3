"""Every statement the repository sends, built in one place and always scoped to one user."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    String,
    Text,
    Update,
    bindparam,
    delete,
    func,
    insert,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import ReturningDelete
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from persistence.models import Task

__all__ = [
    "count_tasks",
    "delete_task",
    "insert_task",
    "insert_tasks",
    "select_task",
    "select_tasks",
    "toggle_task",
    "update_task",
]

# ORM DML statements return `Task` objects; refresh any copy already in the session with them.
_RETURNING_OPTIONS: dict[str, Any] = {"populate_existing": True, "synchronize_session": False}


def _owned(user_id: str, task_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return col(Task.user_id) == user_id, col(Task.id) == task_id


def _next_updated_at() -> ColumnElement[Any]:
    # Strictly later than the previous value even within one transaction (where the
    # statement clock may not have moved), so `updated_at` advances on every change.
    later = col(Task.updated_at) + timedelta(microseconds=1)
    return func.greatest(func.statement_timestamp(), later)


def insert_task(values: dict[str, Any]) -> Insert:
    """INSERT one validated task, RETURNING it (ids and timestamps come from the server)."""
    return insert(Task).values(**values).returning(Task).execution_options(**_RETURNING_OPTIONS)


def select_task(user_id: str, task_id: int) -> SelectOfScalar[Task]:
    """SELECT one task of one user."""
    return select(Task).where(*_owned(user_id, task_id))


def _filtered(statement: Any, user_id: str, complete: bool | None) -> Any:
    statement = statement.where(col(Task.user_id) == user_id)
    if complete is not None:
        statement = statement.where(col(Task.complete) == complete)
    return statement


def select_tasks(
    user_id: str,
    complete: bool | None,
    limit: int | None,
    after: tuple[datetime, int] | None = None,
) -> SelectOfScalar[Task]:
    """SELECT a user's tasks newest first; `id` breaks ties within one transaction's tasks.

    `after` is the (created_at, id) of the last task of the previous page: the next page
    starts right below it, served by the (user_id, created_at, id) index with no sort.
    """
    statement: SelectOfScalar[Task] = _filtered(select(Task), user_id, complete)
    if after is not None:
        statement = statement.where(tuple_(col(Task.created_at), col(Task.id)) < tuple_(*after))
    statement = statement.order_by(col(Task.created_at).desc(), col(Task.id).desc())
    return statement.limit(limit) if limit is not None else statement


def insert_tasks(user_id: str, titles: list[str], descriptions: list[str | None]) -> Executable:
    """One INSERT ... SELECT FROM unnest(titles, descriptions) ... RETURNING, in input order.

    Two array parameters instead of three per row: the statement stays small whatever the
    number of tasks, and psycopg sends it at the speed of a hand-built multi-row INSERT.
    """
    rows = (
        func.unnest(
            bindparam("titles", titles, type_=ARRAY(Text)),
            bindparam("descriptions", descriptions, type_=ARRAY(Text)),
        )
        .table_valued("title", "description", with_ordinality="position")
        .render_derived("item")
    )
    source = select(
        bindparam("user_id", user_id, type_=String), rows.c.title, rows.c.description
    ).order_by(rows.c.position)
    returning = (
        insert(Task).from_select(["user_id", "title", "description"], source).returning(Task)
    )
    return select(Task).from_statement(returning)


def count_tasks(user_id: str, complete: bool | None) -> SelectOfScalar[int]:
    """SELECT count(*) of a user's tasks."""
    statement: SelectOfScalar[int] = _filtered(
        select(func.count()).select_from(Task), user_id, complete
    )
    return statement


def update_task(user_id: str, task_id: int, values: dict[str, Any]) -> Update:
    """UPDATE the given fields of one task of one user, RETURNING it."""
    return (
        update(Task)
        .where(*_owned(user_id, task_id))
        .values(**values, updated_at=_next_updated_at())
        .returning(Task)
        .execution_options(**_RETURNING_OPTIONS)
    )


def toggle_task(user_id: str, task_id: int) -> Update:
    """Flip `complete` in one statement (never read-modify-write), RETURNING the task."""
    return update_task(user_id, task_id, {"complete": ~col(Task.complete)})


def delete_task(user_id: str, task_id: int) -> ReturningDelete[Any]:
    """DELETE one task of one user, RETURNING its id (none back: not found)."""
    return delete(Task).where(*_owned(user_id, task_id)).returning(col(Task.id))
