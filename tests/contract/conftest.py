"""The contract suite against `AsyncUnitOfWork`: a sync facade over it, and the fixtures.

The contract tests (tests/test_repository.py, test_unit_of_work.py, test_validation.py,
test_bulk_and_pages.py) are written once, against the sync interface. Here they run a
second time with every `UnitOfWork` they use — the name in their module, the one the
task factory uses and the `uow` fixture — being `SyncFacade`: an `AsyncUnitOfWork` whose
every coroutine is run to its end on the calling thread's private event loop. So each
contract test passes for both units of work, or fails for the one that breaks it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import persistence.factories
from persistence import AsyncUnitOfWork, create_async_engine, dispose_async_engine
from persistence.testing import TestDatabase

T = TypeVar("T")


class Loops:
    """A private event loop per thread for one test, and the async engines built on each."""

    def __init__(self) -> None:
        self._runners: dict[int, asyncio.Runner] = {}
        self._engines: dict[tuple[int, int], AsyncEngine] = {}
        self._lock = threading.Lock()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` to its end on this thread's loop."""
        thread = threading.get_ident()
        with self._lock:
            if thread not in self._runners:
                self._runners[thread] = asyncio.Runner(loop_factory=asyncio.new_event_loop)
            runner = self._runners[thread]

        async def main() -> T:
            return await awaitable

        return runner.run(main())

    def engine_for(self, engine: Engine) -> AsyncEngine:
        """An async engine on this thread's loop for the database of the sync `engine`."""
        key = (threading.get_ident(), id(engine))
        with self._lock:
            if key not in self._engines:
                self._engines[key] = create_async_engine(engine.url)
            return self._engines[key]

    def close(self) -> None:
        """Dispose every engine on its own loop, then close the loops."""
        for (thread, _), engine in self._engines.items():
            self._runners[thread].run(engine.dispose())
        for runner in self._runners.values():
            runner.run(dispose_async_engine())
            runner.close()


class SyncFacade:
    """`UnitOfWork`'s interface over an `AsyncUnitOfWork` (a sync `Engine` bind is mapped
    to an async engine for the same database)."""

    loops: Loops  # set on the per-test subclass

    def __init__(
        self,
        bind: Engine | AsyncEngine | AsyncConnection | None = None,
        *,
        isolation_level: str | None = None,
        read_only: bool = False,
    ) -> None:
        if isinstance(bind, Engine):
            bind = self.loops.engine_for(bind)
        self._uow = AsyncUnitOfWork(bind, isolation_level=isolation_level, read_only=read_only)

    def _in_loop(self, get: Callable[[], T]) -> T:
        async def inside() -> T:
            return get()

        return self.loops.run(inside())

    def __enter__(self) -> Self:
        self.loops.run(self._uow.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.loops.run(self._uow.__aexit__(exc_type, exc, traceback))

    @property
    def tasks(self) -> _SyncTasks:
        return _SyncTasks(self._in_loop(lambda: self._uow.tasks), self.loops)

    def commit(self) -> None:
        self.loops.run(self._uow.commit())

    def rollback(self) -> None:
        self.loops.run(self._uow.rollback())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        savepoint = self._uow.savepoint()
        self.loops.run(savepoint.__aenter__())
        try:
            yield
        except BaseException as exc:
            if not self.loops.run(savepoint.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.loops.run(savepoint.__aexit__(None, None, None))


class _SyncTasks:
    def __init__(self, tasks: Any, loops: Loops) -> None:
        self._tasks = tasks
        self._loops = loops

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._tasks, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            returned = method(*args, **kwargs)
            if hasattr(returned, "__aiter__"):  # `iterate()`: walked to its end, on the loop
                return iter(self._loops.run(_collected(returned)))
            return self._loops.run(returned)

        return call


async def _collected(items: Any) -> list[Any]:
    return [item async for item in items]


@pytest.fixture
def loops() -> Iterator[Loops]:
    running = Loops()
    yield running
    running.close()


@pytest.fixture
def facade(loops: Loops) -> type[SyncFacade]:
    return type("SyncFacade", (SyncFacade,), {"loops": loops})


@pytest.fixture
def persistence_connection(
    persistence_database: TestDatabase, loops: Loops
) -> Iterator[AsyncConnection]:
    """An async connection inside a transaction that is rolled back when the test ends."""
    engine = loops.engine_for(persistence_database.engine)
    connection = loops.run(engine.connect())
    loops.run(connection.begin())
    try:
        yield connection
    finally:
        loops.run(connection.rollback())
        loops.run(connection.close())


@pytest.fixture
def uow(persistence_connection: AsyncConnection, facade: type[SyncFacade]) -> SyncFacade:
    return facade(persistence_connection)


@pytest.fixture(autouse=True)
def _every_unit_of_work_is_async(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, facade: type[SyncFacade]
) -> None:
    monkeypatch.setitem(request.function.__globals__, "UnitOfWork", facade)
    monkeypatch.setattr(persistence.factories, "UnitOfWork", facade)
