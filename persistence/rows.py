"""Rows into `Task` objects: built directly as psycopg reads them, without the ORM.

The ORM's loading (identity map, per-object state, result processing) costs more than the
query itself for a page of tasks; a `Task` is a plain pydantic object underneath, so it is
built here from the row's values in one step, in the row factory psycopg calls for each
row: no intermediate tuple list is kept. SQLAlchemy gets its per-object state lazily, the
first time anything asks for it (see `models.Task.__getattr__`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import RowMaker, tuple_row
from pydantic import BaseModel
from sqlalchemy.orm import configure_mappers

from persistence.models import Task
from persistence.statements import COLUMNS

__all__ = ["TaskRows"]

_new = object.__new__
# The slots' own setters: cheaper than `object.__setattr__`, which looks each name up.
_slots = BaseModel.__dict__
_set_dict = _slots["__dict__"].__set__
_set_fields = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__
# Every field of a built task is set; the one set is shared (pydantic only ever adds to it,
# and it already holds every field).
_ALL_FIELDS = {"id", "user_id", "title", "description", "complete", "created_at", "updated_at"}


class TaskRows:
    """A psycopg row factory: each row of `statements.COLUMNS` becomes a `Task` of `user_id`.

    Timestamps arrive in UTC (each connection's TimeZone is set to UTC); any that do not
    are converted. In a big result, equal timestamps share one object (a task never
    changed has `updated_at == created_at`; tasks created by one statement share their
    `created_at`), which keeps big results small.
    """

    __slots__ = ("user_id",)

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id

    def __call__(self, cursor: Any) -> RowMaker[Any]:
        # Several results may come back (the set-up statements of a transaction before
        # the task statement): those with the task columns become tasks.
        result = cursor.pgresult
        if result is None or result.nfields != len(COLUMNS):
            return tuple_row(cursor)
        _configured()
        return _maker(self.user_id, share=result.ntuples > SHARE_FROM)


@functools.cache
def _configured() -> None:
    # Attribute access on a Task needs its mapper configured, which loading by the ORM
    # would have done: once, on first use.
    configure_mappers()


# From this many rows on, equal timestamps share one object (it costs a comparison a row).
SHARE_FROM = 1000


def _maker(user_id: str, *, share: bool) -> Callable[[Sequence[Any]], Task]:
    last: list[datetime | None] = [None]
    # Bound once: this runs for every row, and a page of tasks is most of a unit's CPU.
    new, fields, utc = _new, _ALL_FIELDS, UTC
    set_dict, set_fields, set_extra, set_private = _set_dict, _set_fields, _set_extra, _set_private

    def make(values: Sequence[Any]) -> Task:
        task_id, title, description, complete, created, updated = values
        if created.tzinfo is not utc:
            # A session not (yet) in UTC: the connection's first result, or one set so.
            created, updated = created.astimezone(utc), updated.astimezone(utc)
        if share:
            if created == last[0]:
                created = last[0]
            else:
                last[0] = created
            if updated == created:
                updated = created
        # A loaded Task, as the ORM would leave it, without validation: these values come
        # from the database, which holds only valid ones.
        task = new(Task)
        set_dict(
            task,
            {
                "id": task_id,
                "user_id": user_id,
                "title": title,
                "description": description,
                "complete": complete,
                "created_at": created,
                "updated_at": updated,
            },
        )
        set_fields(task, fields)
        set_extra(task, None)
        set_private(task, None)
        return task

    return make
