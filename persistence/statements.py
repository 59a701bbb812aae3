"""Every statement the package sends, built with SQLAlchemy once per shape and reused.

A shape is what decides the SQL text (which filters, which fields an update sets); the
values are parameters. Each shape is compiled the first time it is used, with
PostgreSQL's psycopg dialect, into a `Statement`: the SQL text with `%s` placeholders
and the names of its parameters in order. After that, sending one costs no SQLAlchemy
work at all. Tasks are always selected and returned without `user_id`: every statement
is scoped to one user, who is known.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ClauseElement,
    ColumnElement,
    String,
    Text,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    literal,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import NullType, UserDefinedType
from sqlmodel import col

from persistence.models import Task, UTCDateTime

__all__ = [
    "COLUMNS",
    "Statement",
    "advisory_lock",
    "causal_position",
    "compile_statement",
    "count_tasks",
    "create_schema",
    "delete_task",
    "insert_task",
    "insert_tasks",
    "replica_status",
    "select_task",
    "select_tasks",
    "session_setup",
    "toggle_task",
    "transaction_setup",
    "update_task",
    "xact_status",
]

COLUMNS = ("id", "title", "description", "complete", "created_at", "updated_at")
"""The columns every task statement selects or returns, in this order (`user_id` is the
caller's own)."""

_TASK_COLUMNS = [col(getattr(Task, name)) for name in COLUMNS]

# "format" paramstyle: psycopg's own `%s`, with the parameter names in `positiontup`.
_DIALECT = PGDialect_psycopg(paramstyle="format")  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Statement:
    """One compiled shape: its SQL text and how to order its parameters."""

    sql: str
    """The SQL as psycopg takes it (`%s` placeholders, a literal `%` doubled)."""
    names: tuple[str, ...]
    """The parameter names, in placeholder order."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Values the shape itself carries (constants of the statement)."""
    _order: Callable[[Mapping[str, Any]], Any] | None = field(repr=False, default=None)

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The parameters for psycopg, from `values` by name (and the shape's constants)."""
        if self._order is None:
            return ()
        merged = {**self.fixed, **values} if self.fixed else values
        ordered = self._order(merged)
        return ordered if len(self.names) > 1 else (ordered,)


def compile_statement(clause: ClauseElement, *, ddl: bool = False) -> Statement:
    """Compile a SQLAlchemy statement into a `Statement` (once per shape: callers cache)."""
    compiled: Any = clause.compile(dialect=_DIALECT)
    if ddl:
        return Statement(str(compiled), ())
    names = tuple(compiled.positiontup or ())
    # Bind processors would have to run on every call; psycopg adapts every type used
    # here by itself, so there must be none (a new column type would show up here) but
    # Boolean's, which only checks that a value is a bool (validation already did).
    processors = getattr(compiled, "_bind_processors", {})
    needed = [name for name in processors if not isinstance(compiled.binds[name].type, Boolean)]
    assert not needed, f"statement needs bind processing: {sorted(needed)}"
    binds = compiled.binds
    fixed = {name: binds[name].value for name in names if not binds[name].required}
    order = operator.itemgetter(*names) if names else None
    return Statement(str(compiled), names, fixed, order)


class _Named(UserDefinedType[str]):
    """A PostgreSQL type SQLAlchemy has no class for (`xid8`, `pg_lsn`), for casts."""

    cache_ok = True

    def __init__(self, name: str) -> None:
        self.name = name

    def get_col_spec(self, **_kw: Any) -> str:
        return self.name


def _param(name: str, type_: Any) -> Any:
    return bindparam(name, type_=type_)


def _owned() -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (
        col(Task.user_id) == _param("user_id", String),
        col(Task.id) == _param("task_id", BigInteger),
    )


@functools.cache
def insert_task() -> Statement:
    """INSERT one validated task (`user_id`, `title`, `description`), RETURNING it."""
    values = {
        "user_id": _param("user_id", String),
        "title": _param("title", String),
        "description": _param("description", String),
        "complete": false(),  # the server's default, written out (no Python-side default)
    }
    return compile_statement(insert(Task).values(values).returning(*_TASK_COLUMNS))


@functools.cache
def insert_tasks() -> Statement:
    """One INSERT ... SELECT FROM unnest(titles, descriptions) ... RETURNING, in input order.

    Two array parameters (`titles`, `descriptions`) and `user_id`: the statement stays
    small whatever the number of tasks.
    """
    rows = (
        # Cast rather than typed: psycopg adapts the lists itself (no per-item processing).
        func.unnest(
            cast(_param("titles", NullType()), ARRAY(Text)),
            cast(_param("descriptions", NullType()), ARRAY(Text)),
        )
        .table_valued("title", "description", with_ordinality="position")
        .render_derived("item")
    )
    source = select(_param("user_id", String), rows.c.title, rows.c.description, false()).order_by(
        rows.c.position
    )
    return compile_statement(
        insert(Task)
        .from_select(["user_id", "title", "description", "complete"], source)
        .returning(*_TASK_COLUMNS)
    )


@functools.cache
def select_task() -> Statement:
    """SELECT one task (`user_id`, `task_id`)."""
    return compile_statement(select(*_TASK_COLUMNS).where(*_owned()))


def _filtered(statement: Any, complete: bool) -> Any:
    statement = statement.where(col(Task.user_id) == _param("user_id", String))
    if complete:
        statement = statement.where(col(Task.complete) == _param("complete", Boolean))
    return statement


@functools.cache
def select_tasks(*, complete: bool, limit: bool, after: bool) -> Statement:
    """SELECT a user's tasks newest first; `id` breaks ties within one transaction's tasks.

    Each flag says whether that parameter is part of the shape: `complete`, `limit`, and
    `after_created_at` + `after_id` (the last task of the previous page: the next page
    starts right below it, served by the (user_id, created_at, id) index with no sort).
    """
    statement = _filtered(select(*_TASK_COLUMNS), complete)
    if after:
        position = tuple_(_param("after_created_at", UTCDateTime), _param("after_id", BigInteger))
        statement = statement.where(tuple_(col(Task.created_at), col(Task.id)) < position)
    statement = statement.order_by(col(Task.created_at).desc(), col(Task.id).desc())
    if limit:
        statement = statement.limit(_param("limit", BigInteger))
    return compile_statement(statement)


@functools.cache
def count_tasks(*, complete: bool) -> Statement:
    """SELECT count(*) of a user's tasks (`complete` says whether it filters on it)."""
    return compile_statement(_filtered(select(func.count()).select_from(Task), complete))


def _next_updated_at() -> ColumnElement[Any]:
    # Strictly later than the previous value even within one transaction (where the
    # statement clock may not have moved), so `updated_at` advances on every change.
    later = col(Task.updated_at) + timedelta(microseconds=1)
    return func.greatest(func.statement_timestamp(), later)


@functools.cache
def update_task(fields: frozenset[str]) -> Statement:
    """UPDATE the given fields (parameters named after them) of one task, RETURNING it."""
    types = {"title": String, "description": String, "complete": Boolean}
    values: dict[str, Any] = {name: _param(name, types[name]) for name in sorted(fields)}
    return compile_statement(
        update(Task)
        .where(*_owned())
        .values(**values, updated_at=_next_updated_at())
        .returning(*_TASK_COLUMNS)
    )


@functools.cache
def toggle_task() -> Statement:
    """Flip `complete` in one statement (never read-modify-write), RETURNING the task."""
    return compile_statement(
        update(Task)
        .where(*_owned())
        .values(complete=~col(Task.complete), updated_at=_next_updated_at())
        .returning(*_TASK_COLUMNS)
    )


@functools.cache
def delete_task() -> Statement:
    """DELETE one task, RETURNING its id (none back: not found)."""
    return compile_statement(delete(Task).where(*_owned()).returning(col(Task.id)))


# --- transactions ---------------------------------------------------------------------


@functools.cache
def transaction_setup(*, xid: bool, settings: tuple[tuple[str, int], ...]) -> Statement:
    """The statement that rides with BEGIN (or before a read, in the same implicit
    transaction): the transaction's id as text (`xid`: with the first write, to resolve a
    lost COMMIT) and `set_config(name, value, true)` — `SET LOCAL` — for each (name,
    milliseconds) of `settings`. It has no parameters: the values are whole numbers,
    written into the statement (a shape per value; a process uses few)."""
    columns: list[Any] = []
    if xid:
        columns.append(cast(func.pg_current_xact_id(), Text))
    for name, milliseconds in settings:
        value = str(int(milliseconds))
        columns.append(func.set_config(literal(name), literal(value), true()))
    compiled = select(*columns).compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})
    return Statement(str(compiled), ())


@functools.cache
def session_setup() -> Statement:
    """Put a new connection's session in UTC, so timestamps arrive in UTC (once per
    connection, in the pipeline of its first statement)."""
    return compile_statement(select(func.set_config("TimeZone", "UTC", False)))


@functools.cache
def causal_position() -> Statement:
    """The primary's WAL insert position: what a replica must have replayed to show a
    commit made before it was read."""
    return compile_statement(select(func.pg_current_wal_insert_lsn().cast(Text)))


@functools.cache
def xact_status() -> Statement:
    """`pg_xact_status(xid)`: committed, aborted or in progress (`xid` as text); and the
    primary's WAL insert position now, past the commit's if it committed (a causal token
    for a transaction whose COMMIT's own answer was lost)."""
    status = func.pg_xact_status(cast(_param("xid", NullType()), _Named("xid8")))
    return compile_statement(select(status, func.pg_current_wal_insert_lsn().cast(Text)))


@functools.cache
def replica_status() -> Statement:
    """Whether the server is a standby, whether it has replayed at least the `token`
    position (`NULL` when no token), how many seconds of commits it is behind (0 when it
    has replayed all it received), and how far it has replayed (as text)."""
    receive, replay = func.pg_last_wal_receive_lsn(), func.pg_last_wal_replay_lsn()
    lag = case(
        (receive == replay, 0.0),
        else_=func.extract("epoch", func.now() - func.pg_last_xact_replay_timestamp()),
    )
    token = _param("token", NullType())
    replayed = case(
        (token.is_(None), None),
        else_=replay >= cast(token, _Named("pg_lsn")),
    )
    return compile_statement(
        select(func.pg_is_in_recovery(), replayed, func.coalesce(lag, 0.0), cast(replay, Text))
    )


@functools.cache
def advisory_lock() -> Statement:
    """A transaction-scoped advisory lock, so that two processes never create the table at
    once (they would collide in the catalog)."""
    return compile_statement(select(func.pg_advisory_xact_lock(_param("key", BigInteger))))


@functools.cache
def create_schema() -> tuple[Statement, ...]:
    """CREATE TABLE / INDEX ... IF NOT EXISTS for the `tasks` table (idempotent)."""
    table = Task.__table__  # type: ignore[attr-defined]
    ddl: list[ClauseElement] = [CreateTable(table, if_not_exists=True)]
    ddl += [CreateIndex(index, if_not_exists=True) for index in sorted(table.indexes, key=str)]
    return tuple(compile_statement(clause, ddl=True) for clause in ddl)
