"""The same units of work written six ways: this package (sync, async), plain SQLModel,
SQLAlchemy Core, and raw psycopg 3 (sync, async) in pipeline mode.

Each has `list` (a 50-row page), `create`, `toggle` and `mixed` (create + toggle + list
in one unit of work), and `close`. "Ours" uses only the package's public API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import sqlalchemy
import sqlmodel
from sqlalchemy import URL, Engine, insert, select, update
from sqlmodel import Session, col

from benchmarks.common import (
    INSERT,
    LIST,
    TOGGLE,
    USER,
    adispose,
    dispose,
    libpq,
    package,
)
from persistence import (
    AsyncUnitOfWork,
    Task,
    UnitOfWork,
    create_async_engine,
    create_engine,
)

OPERATIONS = ("list", "create", "toggle", "mixed")


class Ours:
    """This package."""

    name = "persistence"

    def __init__(self, url: URL, **engine_options: Any) -> None:
        self.engine = create_engine(package(url), **engine_options)
        self.task_id = self.create()

    def list(self) -> None:
        with UnitOfWork(self.engine) as uow:
            uow.tasks.list(user_id=USER, limit=50)

    def create(self) -> int:
        with UnitOfWork(self.engine) as uow:
            return uow.tasks.create(user_id=USER, title="bench").id

    def toggle(self) -> None:
        with UnitOfWork(self.engine) as uow:
            uow.tasks.toggle_complete(user_id=USER, task_id=self.task_id)

    def mixed(self) -> None:
        with UnitOfWork(self.engine) as uow:
            mixed(uow, USER)

    def close(self) -> None:
        dispose(self.engine)


def mixed(uow: UnitOfWork, user: str) -> None:
    """The mixed unit's body in this package: create + toggle_complete + list 50."""
    task = uow.tasks.create(user_id=user, title="bench")
    uow.tasks.toggle_complete(user_id=user, task_id=task.id)
    uow.tasks.list(user_id=user, limit=50)


async def mixed_async(uow: AsyncUnitOfWork, user: str) -> None:
    task = await uow.tasks.create(user_id=user, title="bench")
    await uow.tasks.toggle_complete(user_id=user, task_id=task.id)
    await uow.tasks.list(user_id=user, limit=50)


class OursAsync:
    """This package's `AsyncUnitOfWork`, each unit of work awaited on a private loop."""

    name = "persistence async"

    def __init__(self, url: URL) -> None:
        self.runner = asyncio.Runner()
        self.engine = create_async_engine(package(url))
        self.task_id = self.create()

    def _run(self, work: Callable[[AsyncUnitOfWork], Awaitable[Any]]) -> Any:
        async def unit() -> Any:
            async with AsyncUnitOfWork(self.engine) as uow:
                return await work(uow)

        return self.runner.run(unit())

    def list(self) -> None:
        self._run(lambda uow: uow.tasks.list(user_id=USER, limit=50))

    def create(self) -> int:
        async def create(uow: AsyncUnitOfWork) -> int:
            return (await uow.tasks.create(user_id=USER, title="bench")).id

        return int(self._run(create))

    def toggle(self) -> None:
        self._run(lambda uow: uow.tasks.toggle_complete(user_id=USER, task_id=self.task_id))

    def mixed(self) -> None:
        self._run(lambda uow: mixed_async(uow, USER))

    def close(self) -> None:
        self.runner.run(adispose(self.engine))
        self.runner.close()


def _listed(session: Session) -> list[Task]:
    statement = (
        sqlmodel.select(Task)
        .where(col(Task.user_id) == USER)
        .order_by(col(Task.created_at).desc(), col(Task.id).desc())
        .limit(50)
    )
    return list(session.exec(statement).all())


class PlainSQLModel:
    """SQLModel as tutorials write it: a Session per unit of work, psycopg defaults."""

    name = "plain SQLModel"

    def __init__(self, url: URL) -> None:
        self.engine: Engine = sqlmodel.create_engine(url)
        with Session(self.engine) as session:
            task = Task(user_id=USER, title="bench")
            session.add(task)
            session.commit()
            session.refresh(task)
            self.task_id = task.id

    def list(self) -> None:
        with Session(self.engine) as session:
            _listed(session)

    def create(self) -> None:
        with Session(self.engine) as session:
            session.add(Task(user_id=USER, title="bench"))
            session.commit()

    def toggle(self) -> None:
        with Session(self.engine) as session:
            task = session.get(Task, self.task_id)
            assert task is not None
            task.complete = not task.complete
            session.commit()

    def mixed(self) -> None:
        with Session(self.engine) as session:
            task = Task(user_id=USER, title="bench")
            session.add(task)
            session.flush()
            task.complete = not task.complete
            session.flush()
            _listed(session)
            session.commit()

    def close(self) -> None:
        self.engine.dispose()


_TABLE: Any = Task.__table__


class SQLAlchemyCore:
    """SQLAlchemy Core as its docs write it: `engine.begin()`, statements built per call."""

    name = "SQLAlchemy Core"

    def __init__(self, url: URL) -> None:
        self.engine = sqlalchemy.create_engine(url)
        self.task_id = self.create()

    def _list(self, connection: sqlalchemy.Connection) -> None:
        t = _TABLE.c
        connection.execute(
            select(_TABLE)
            .where(t.user_id == USER)
            .order_by(t.created_at.desc(), t.id.desc())
            .limit(50)
        ).all()

    def _create(self, connection: sqlalchemy.Connection) -> int:
        row = connection.execute(
            insert(_TABLE).values(user_id=USER, title="bench").returning(_TABLE)
        ).one()
        return int(row.id)

    def _toggle(self, connection: sqlalchemy.Connection, task_id: int) -> None:
        t = _TABLE.c
        connection.execute(
            update(_TABLE)
            .where(t.user_id == USER, t.id == task_id)
            .values(complete=~t.complete, updated_at=sqlalchemy.func.statement_timestamp())
            .returning(_TABLE)
        ).all()

    def list(self) -> None:
        with self.engine.connect() as connection:
            self._list(connection)

    def create(self) -> int:
        with self.engine.begin() as connection:
            return self._create(connection)

    def toggle(self) -> None:
        with self.engine.begin() as connection:
            self._toggle(connection, self.task_id)

    def mixed(self) -> None:
        with self.engine.begin() as connection:
            self._toggle(connection, self._create(connection))
            self._list(connection)

    def close(self) -> None:
        self.engine.dispose()


def raw_mixed(connection: psycopg.Connection[Any], user: str) -> None:
    """The mixed unit in raw psycopg: BEGIN rides with the INSERT in a pipeline; the
    toggle waits for the insert's id, the list for the toggle; then COMMIT."""
    with connection.pipeline():
        connection.execute("BEGIN")
        row = connection.execute(INSERT, (user, "bench"))
    task_id = row.fetchone()[0]  # type: ignore[index]
    connection.execute(TOGGLE, (user, task_id)).fetchall()
    connection.execute(LIST, (user,)).fetchall()
    connection.execute("COMMIT")


async def raw_mixed_async(connection: psycopg.AsyncConnection[Any], user: str) -> None:
    async with connection.pipeline():
        await connection.execute("BEGIN")
        row = await connection.execute(INSERT, (user, "bench"))
    task_id = (await row.fetchone())[0]  # type: ignore[index]
    await (await connection.execute(TOGGLE, (user, task_id))).fetchall()
    await (await connection.execute(LIST, (user,))).fetchall()
    await connection.execute("COMMIT")


class RawPsycopg:
    """Hand-written psycopg 3 in pipeline mode on one autocommit connection: BEGIN rides
    with the first write, each later statement waits for the one before, then COMMIT."""

    name = "raw psycopg"

    def __init__(self, url: URL) -> None:
        self.connection = psycopg.connect(libpq(url), autocommit=True, prepare_threshold=None)
        self.task_id = self.create()

    def list(self) -> None:
        self.connection.execute(LIST, (USER,)).fetchall()

    def create(self) -> int:
        with self.connection.pipeline():
            self.connection.execute("BEGIN")
            row = self.connection.execute(INSERT, (USER, "bench"))
        task_id = int(row.fetchone()[0])  # type: ignore[index]
        self.connection.execute("COMMIT")
        return task_id

    def toggle(self) -> None:
        with self.connection.pipeline():
            self.connection.execute("BEGIN")
            cursor = self.connection.execute(TOGGLE, (USER, self.task_id))
        cursor.fetchall()
        self.connection.execute("COMMIT")

    def mixed(self) -> None:
        raw_mixed(self.connection, USER)

    def close(self) -> None:
        self.connection.close()


class RawPsycopgAsync:
    """The same statements on a `psycopg.AsyncConnection`, each unit awaited on a private
    loop exactly as `OursAsync` awaits its units."""

    name = "raw psycopg async"

    def __init__(self, url: URL) -> None:
        self.runner = asyncio.Runner()
        self.connection = self.runner.run(
            psycopg.AsyncConnection.connect(libpq(url), autocommit=True, prepare_threshold=None)
        )
        self.task_id = self.create()

    async def _list(self) -> None:
        await (await self.connection.execute(LIST, (USER,))).fetchall()

    async def _create(self) -> int:
        async with self.connection.pipeline():
            await self.connection.execute("BEGIN")
            row = await self.connection.execute(INSERT, (USER, "bench"))
        task_id = int((await row.fetchone())[0])  # type: ignore[index]
        await self.connection.execute("COMMIT")
        return task_id

    async def _toggle(self) -> None:
        async with self.connection.pipeline():
            await self.connection.execute("BEGIN")
            cursor = await self.connection.execute(TOGGLE, (USER, self.task_id))
        await cursor.fetchall()
        await self.connection.execute("COMMIT")

    def list(self) -> None:
        self.runner.run(self._list())

    def create(self) -> int:
        return self.runner.run(self._create())

    def toggle(self) -> None:
        self.runner.run(self._toggle())

    def mixed(self) -> None:
        self.runner.run(raw_mixed_async(self.connection, USER))

    def close(self) -> None:
        self.runner.run(self.connection.close())
        self.runner.close()
