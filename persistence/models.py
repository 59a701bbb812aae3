"""The `Task` table and the input models that validate everything before it reaches SQL."""

# No `from __future__ import annotations` here: SQLModel and pydantic read these annotations
# at class creation, and plain ones keep that simple.

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Identity,
    Index,
    func,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from persistence.errors import TaskValidationError

__all__ = [
    "DESCRIPTION_MAX",
    "ISOLATION_LEVELS",
    "LIST_LIMIT_MAX",
    "TASK_ID_MAX",
    "TITLE_MAX",
    "USER_ID_MAX",
    "Task",
    "TaskChanges",
    "TaskCreate",
    "check_after",
    "check_after_token",
    "check_flag",
    "check_isolation_level",
    "check_items",
    "check_limit",
    "check_page_size",
    "check_task_id",
    "check_timeout",
    "check_user_id",
    "plain_title",
    "validate",
]

USER_ID_MAX = 255
TITLE_MAX = 200
DESCRIPTION_MAX = 1000
TASK_ID_MAX = 2**63 - 1
"""The largest id the BIGINT column can hold; larger ids are simply not found."""
LIST_LIMIT_MAX = 100_000
"""The most tasks one `list()` returns; `iterate()` walks any number, a page at a time."""


class UTCDateTime(TypeDecorator[datetime]):
    """`timestamp with time zone`, always read back in UTC whatever the session's TimeZone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        # `updated_at + timedelta(...)` must bind an interval, not a timestamp.
        return self.impl_instance.coerce_compared_value(op, value)


class Task(SQLModel, table=True):
    """One user's task, as stored. Build new tasks through `uow.tasks.create`, not directly:
    a table model skips validation in `__init__`."""

    __tablename__: ClassVar[str] = "tasks"
    __table_args__ = (
        # Serves "this user's tasks, newest first" (scanned backwards) and keyset pages.
        Index("ix_tasks_user_id_created_at_id", "user_id", "created_at", "id"),
        # A second line of defence: the same rules the input models enforce.
        CheckConstraint(
            f"char_length(user_id) BETWEEN 1 AND {USER_ID_MAX} AND btrim(user_id) <> ''",
            name="ck_tasks_user_id",
        ),
        CheckConstraint(
            f"char_length(title) BETWEEN 1 AND {TITLE_MAX} AND title = btrim(title)",
            name="ck_tasks_title",
        ),
        CheckConstraint(
            f"description IS NULL OR char_length(description) <= {DESCRIPTION_MAX}",
            name="ck_tasks_description",
        ),
        CheckConstraint("updated_at >= created_at", name="ck_tasks_updated_after_created"),
    )

    # Typed `int`: every Task a caller receives has been stored and has its id. Only a
    # Task built by hand (which callers shouldn't do) has `None` here until it is stored.
    id: int = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    user_id: str = Field(max_length=USER_ID_MAX, nullable=False)
    title: str = Field(max_length=TITLE_MAX, nullable=False)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX, nullable=True)
    complete: bool = Field(
        default=False, nullable=False, sa_column_kwargs={"server_default": text("false")}
    )
    # Set by the server, in UTC, so that every application server agrees on the clock.
    created_at: datetime = Field(
        default=None,
        sa_type=UTCDateTime,
        nullable=False,
        sa_column_kwargs={"server_default": func.statement_timestamp()},
    )
    updated_at: datetime = Field(
        default=None,
        sa_type=UTCDateTime,
        nullable=False,
        sa_column_kwargs={"server_default": func.statement_timestamp()},
    )

    def __repr__(self) -> str:
        return (
            f"Task(id={self.id!r}, user_id={self.user_id!r}, title={self.title!r}, "
            f"complete={self.complete!r})"
        )

    if not TYPE_CHECKING:  # pydantic declares `__getattr__` the same way

        def __getattr__(self, name: str) -> Any:
            # A task read by the repository (its fields set, no state yet); a task being
            # constructed has no fields yet, and gets its state from SQLAlchemy itself.
            if name == "_sa_instance_state" and "id" in self.__dict__:
                return _detached_state(self)
            return super().__getattr__(name)


def _detached_state(task: "Task") -> Any:
    # Tasks read by the repository are built without SQLAlchemy's per-object state (it
    # costs more than the rest of the object); SQLAlchemy gets one, detached, as the ORM
    # would have left it, the first time anything asks for it.
    manager = type(task)._sa_class_manager  # type: ignore[attr-defined]
    state = manager._state_constructor(task, manager)
    state.key = (type(task), (task.__dict__["id"],), None)
    task.__dict__["_sa_instance_state"] = state
    return state


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _user_id(value: str) -> str:
    _clean_text(value)
    if not value.strip():
        raise ValueError("must not be blank")
    if len(value) > USER_ID_MAX:
        raise ValueError(f"must be at most {USER_ID_MAX} characters, got {len(value)}")
    return value


def _title(value: str) -> str:
    value = _clean_text(value).strip()
    if not value:
        raise ValueError("must not be blank")
    if len(value) > TITLE_MAX:
        raise ValueError(f"must be at most {TITLE_MAX} characters, got {len(value)}")
    return value


def _description(value: str | None) -> str | None:
    if value is None:
        return None
    _clean_text(value)
    if len(value) > DESCRIPTION_MAX:
        raise ValueError(f"must be at most {DESCRIPTION_MAX} characters, got {len(value)}")
    return value


UserId = Annotated[str, AfterValidator(_user_id)]
Title = Annotated[str, AfterValidator(_title)]
Description = Annotated[str | None, AfterValidator(_description)]


# Input models are plain pydantic models, separate from the table model (which skips
# validation in `__init__`): validated in pydantic-core, fast enough for bulk creates.
class TaskItem(BaseModel):
    """One item of a bulk create: a new task's fields but its owner."""

    model_config = ConfigDict(strict=True, extra="forbid")

    title: Title
    description: Description = None


class TaskCreate(TaskItem):
    """A new task's fields, validated (strict types: no coercion of ints or bytes to text)."""

    user_id: UserId


_ITEMS = TypeAdapter(list[TaskItem])


class TaskChanges(BaseModel):
    """The fields an update sets; only the ones given are changed."""

    model_config = ConfigDict(strict=True, extra="forbid")

    title: Title | None = None
    description: Description = None
    complete: bool | None = None

    @field_validator("title", "complete", mode="before")
    @classmethod
    def _not_none(cls, value: object) -> object:
        # `None` clears a description, but a title or a completion flag can't be cleared.
        if value is None:
            raise ValueError("must not be None")
        return value


_TYPE_NAMES = {"string_type": "a str", "bool_type": "a bool", "none_required": "None"}

_Model = TypeVar("_Model", bound=BaseModel)


def validate(model: type[_Model], data: dict[str, Any]) -> _Model:
    """Validate `data` into `model`; raise `TaskValidationError` naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None


def _first_error(exc: ValidationError, prefix: str = "") -> TaskValidationError:
    first = exc.errors(include_url=False)[0]
    field = prefix
    for part in first["loc"]:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    expected = _TYPE_NAMES.get(first["type"])
    if expected is not None:
        message = f"must be {expected}, got {type(first['input']).__name__}"
    elif first["type"] == "extra_forbidden":
        message = "is not a field of a task"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
    return TaskValidationError(field or "?", message)


def check_user_id(user_id: object) -> str:
    """Return `user_id` if it is a valid user id, else raise `TaskValidationError`."""
    if not isinstance(user_id, str):
        raise TaskValidationError("user_id", f"must be a str, got {type(user_id).__name__}")
    try:
        return _user_id(user_id)
    except ValueError as exc:
        raise TaskValidationError("user_id", str(exc)) from None


def check_task_id(task_id: object) -> int | None:
    """Return `task_id` if a row could have it, `None` if it cannot exist (so: not found).

    Raises `TaskValidationError` when it is not an int at all.
    """
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise TaskValidationError("task_id", f"must be an int, got {type(task_id).__name__}")
    return task_id if 1 <= task_id <= TASK_ID_MAX else None


def check_flag(name: str, value: object, *, optional: bool) -> bool | None:
    """Return `value` if it is a bool (or `None` when `optional`), else raise."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        expected = "a bool or None" if optional else "a bool"
        raise TaskValidationError(name, f"must be {expected}, got {type(value).__name__}")
    return value


def check_after(after: object) -> tuple[datetime, int] | None:
    """Return the keyset position (created_at, id) of `after`, a `Task` from a previous page."""
    if after is None:
        return None
    if not isinstance(after, Task):
        raise TaskValidationError("after", f"must be a Task or None, got {type(after).__name__}")
    if not isinstance(after.created_at, datetime) or after.created_at.tzinfo is None:
        raise TaskValidationError("after", "must be a stored Task (it has no created_at)")
    if isinstance(after.id, bool) or not isinstance(after.id, int):
        raise TaskValidationError("after", "must be a stored Task (it has no id)")
    return after.created_at, after.id


def check_items(items: object) -> tuple[list[str], list[str | None]]:
    """Validate every item of a bulk create; return their titles (stripped) and
    descriptions, or raise on the first bad one, naming it.

    An item can't carry a `user_id`: the call's applies to all, so one call can't write
    for another user.
    """
    if not isinstance(items, (list, tuple)):
        raise TaskValidationError("items", f"must be a list of dicts, got {type(items).__name__}")
    accepted = _plainly_valid(items)
    if accepted is not None:
        return accepted
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            kind = type(item).__name__
            raise TaskValidationError(f"items[{index}]", f"must be a dict, got {kind}")
    try:
        rows = _ITEMS.validate_python([dict(item) for item in items])
    except ValidationError as exc:
        raise _first_error(exc, prefix="items") from None
    return [row.title for row in rows], [row.description for row in rows]


_ITEM_KEYS = frozenset({"title", "description"})


def _plainly_valid(items: list[Any] | tuple[Any, ...]) -> tuple[list[str], list[str | None]] | None:
    """The common case of `check_items`, checked in plain Python (a bulk create of 100,000
    items spends most of its time here otherwise): every item a `dict` of a `str` title
    and an optional `str` or `None` description, all of them valid. It only ever accepts
    what the input models accept, and gives the same values; anything else (including
    every invalid item) returns `None`, and the models decide, with their error."""
    titles: list[str] = []
    descriptions: list[str | None] = []
    keys = _ITEM_KEYS
    for item in items:
        if type(item) is not dict or not item.keys() <= keys:
            return None
        title = plain_title(item.get("title"), item.get("description"))
        if title is None:
            return None
        titles.append(title)
        descriptions.append(item.get("description"))
    return titles, descriptions


def plain_title(title: object, description: object) -> str | None:
    """`title` stripped, if `title` and `description` are plainly valid (a `str` title
    and a `str` or `None` description, both within the rules); else `None`, and the
    input models decide (with their error). The common case of a create, in plain
    Python: only ever what the models accept, with the same values."""
    if type(title) is not str or "\x00" in title or not (title.isascii() or _encodes(title)):
        return None
    title = title.strip()
    if not title or len(title) > TITLE_MAX:
        return None
    if description is not None and (
        type(description) is not str
        or len(description) > DESCRIPTION_MAX
        or "\x00" in description
        or not (description.isascii() or _encodes(description))
    ):
        return None
    return title


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_page_size(page_size: object) -> int:
    """Return `page_size` if it is an int from 1 to `LIST_LIMIT_MAX`, else raise."""
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise TaskValidationError("page_size", f"must be an int, got {type(page_size).__name__}")
    if not 1 <= page_size <= LIST_LIMIT_MAX:
        raise TaskValidationError(
            "page_size", f"must be between 1 and {LIST_LIMIT_MAX}, got {page_size}"
        )
    return page_size


ISOLATION_LEVELS = frozenset(
    {"READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"}
)


def check_isolation_level(isolation_level: object) -> str | None:
    """Return `isolation_level` as PostgreSQL spells it ("serializable" and "REPEATABLE_READ"
    are accepted too), or `None` for the server's default; else raise."""
    if isolation_level is None:
        return None
    level = str(isolation_level).strip().upper().replace("_", " ")
    if not isinstance(isolation_level, str) or level not in ISOLATION_LEVELS:
        raise TaskValidationError(
            "isolation_level",
            f"must be one of {sorted(ISOLATION_LEVELS)} or None, got {isolation_level!r}",
        )
    return level


def check_limit(limit: object) -> int | None:
    """Return a usable LIMIT: `None` for "all" (at most `LIST_LIMIT_MAX`, checked by the
    caller), else an int >= 0, capped at `LIST_LIMIT_MAX`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TaskValidationError("limit", f"must be an int or None, got {type(limit).__name__}")
    if limit < 0:
        raise TaskValidationError("limit", f"must not be negative, got {limit}")
    return min(limit, LIST_LIMIT_MAX)


_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def check_after_token(after: object) -> str | None:
    """Return a causal token (`"16/B374D848"`, as `uow.causal_token` gives) or `None`."""
    if after is None:
        return None
    if not isinstance(after, str) or not _LSN.fullmatch(after.strip()):
        raise TaskValidationError(
            "after", f"must be a causal token like '16/B374D848' or None, got {after!r}"
        )
    return after.strip().upper()


def check_timeout(timeout: object) -> float | None:
    """Return a unit of work's deadline in seconds (`None`: none), else raise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise TaskValidationError(
            "timeout", f"must be a number of seconds above 0, or None, got {timeout!r}"
        )
    return float(timeout)
