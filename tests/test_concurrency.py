"""Many threads at once: no lost update, bounded waits for connections, all-or-nothing units."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from persistence import PoolTimeoutError, UnitOfWork, create_engine
from persistence.testing import TestDatabase
from tests.conftest import STUCK, checked_out


class Planned(Exception):
    """A failure planted halfway through a unit of work."""


def test_sixteen_threads_toggling_one_task_lose_no_update(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow:
        task = uow.tasks.create(user_id=user, title="contended")
    start = threading.Barrier(16)

    def toggle_25_times() -> None:
        start.wait()
        for _ in range(25):
            with UnitOfWork(persistence_engine) as uow:
                uow.tasks.toggle_complete(user_id=user, task_id=task.id)

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(toggle_25_times) for _ in range(16)]:
            future.result()
    with UnitOfWork(persistence_engine) as uow:
        final = uow.tasks.get(user_id=user, task_id=task.id)
    assert final is not None
    assert final.complete is False  # 400 toggles: an even number
    # Each toggle advanced updated_at by at least a microsecond: none was lost.
    assert (final.updated_at - task.updated_at).total_seconds() >= 400e-6


def test_forty_eight_threads_share_a_pool_of_four_and_all_finish(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    small = create_engine(persistence_database.url, pool_size=4, max_overflow=0, pool_timeout=60)
    try:

        def work(n: int) -> None:
            with UnitOfWork(small) as uow:
                task = uow.tasks.create(user_id=user, title=f"thread {n}")
                uow.tasks.toggle_complete(user_id=user, task_id=task.id)

        with ThreadPoolExecutor(48) as pool:
            list(pool.map(work, range(48)))
        assert checked_out(small) == 0
    finally:
        small.dispose()
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user, complete=True) == 48


def test_waiting_for_a_connection_ends_in_a_clear_error(
    persistence_database: TestDatabase, user: str
):
    tiny = create_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with UnitOfWork(tiny) as uow:
            uow.tasks.count(user_id=user)
            held.set()
            release.wait()  # set in the `finally` below, however the test ends

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(STUCK)  # the only connection is taken
        with pytest.raises(PoolTimeoutError, match="pool exhausted"), UnitOfWork(tiny) as uow:
            uow.tasks.count(user_id=user)
    finally:
        release.set()
        holder.join()
        tiny.dispose()


def test_units_that_fail_halfway_leave_nothing_and_the_others_everything(
    persistence_engine: Engine, user: str
):
    plan = random.Random(2026)
    # 8 threads x 40 units of work; about 30 % of them fail after their first two writes.
    fails = {(t, n): plan.random() < 0.3 for t in range(8) for n in range(40)}

    def worker(thread: int) -> None:
        for n in range(40):
            try:
                with UnitOfWork(persistence_engine) as uow:
                    first = uow.tasks.create(user_id=user, title=f"{thread}-{n}-a")
                    uow.tasks.toggle_complete(user_id=user, task_id=first.id)
                    if fails[(thread, n)]:
                        raise Planned
                    uow.tasks.create(user_id=user, title=f"{thread}-{n}-b")
            except Planned:
                pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    with UnitOfWork(persistence_engine) as uow:
        stored = uow.tasks.list(user_id=user, limit=None)
    titles = {task.title for task in stored}
    expected = {
        f"{t}-{n}-{part}" for (t, n), failed in fails.items() if not failed for part in "ab"
    }
    assert 0 < sum(fails.values()) < len(fails)
    assert titles == expected
    assert all(task.complete == task.title.endswith("-a") for task in stored)
