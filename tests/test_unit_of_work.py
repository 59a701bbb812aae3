"""Commit and rollback boundaries, savepoints, readable results, threads.

These tests commit for real (`persistence_engine`) and look at committed state through
a separate connection.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func
from sqlmodel import col, select

from persistence import DatabaseError, PersistenceError, Task, TaskValidationError, UnitOfWork
from tests.conftest import execute_in


class Boom(Exception):
    """The application's own failure."""


def committed_titles(engine: Engine, user: str) -> list[str]:
    """What another connection sees as committed, oldest first."""
    with engine.connect() as other:
        rows = other.execute(
            select(Task.title).where(col(Task.user_id) == user).order_by(col(Task.id))
        )
        return [title for (title,) in rows]


def test_a_clean_exit_commits(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="a")
        uow.tasks.create(user_id=user, title="b")
        assert committed_titles(persistence_engine, user) == []  # not before the exit
    assert committed_titles(persistence_engine, user) == ["a", "b"]


def test_an_exception_rolls_back_everything_and_propagates_unchanged(
    persistence_engine: Engine, user: str
):
    error = Boom("halfway")
    with pytest.raises(Boom) as raised, UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="a")
        uow.tasks.create(user_id=user, title="b")
        raise error
    assert raised.value is error
    assert committed_titles(persistence_engine, user) == []


def test_an_exception_after_a_commit_keeps_what_was_committed(
    persistence_engine: Engine, user: str
):
    with pytest.raises(Boom), UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="kept")
        uow.commit()
        assert committed_titles(persistence_engine, user) == ["kept"]
        uow.tasks.create(user_id=user, title="lost")
        raise Boom
    assert committed_titles(persistence_engine, user) == ["kept"]


def test_rollback_discards_work_since_the_last_commit_and_the_block_goes_on(
    persistence_engine: Engine, user: str
):
    with UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="first")
        uow.commit()
        uow.tasks.create(user_id=user, title="discarded")
        uow.rollback()
        assert uow.tasks.count(user_id=user) == 1
        uow.tasks.create(user_id=user, title="after")
    assert committed_titles(persistence_engine, user) == ["first", "after"]


def test_a_failing_savepoint_undoes_only_its_own_work(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="outer")
        with pytest.raises(Boom), uow.savepoint():
            uow.tasks.create(user_id=user, title="inner")
            raise Boom
        uow.tasks.create(user_id=user, title="outer again")
    assert committed_titles(persistence_engine, user) == ["outer", "outer again"]


def test_a_savepoint_that_succeeds_keeps_its_work(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow:
        with uow.savepoint():
            uow.tasks.create(user_id=user, title="inner")
        with pytest.raises(Boom), uow.savepoint():
            uow.tasks.toggle_complete(user_id=user, task_id=uow.tasks.list(user_id=user)[0].id)
            raise Boom
        assert uow.tasks.list(user_id=user)[0].complete is False
    assert committed_titles(persistence_engine, user) == ["inner"]


def test_savepoints_nest(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow, uow.savepoint():
        uow.tasks.create(user_id=user, title="level 1")
        with pytest.raises(Boom), uow.savepoint():
            uow.tasks.create(user_id=user, title="level 2")
            raise Boom
    assert committed_titles(persistence_engine, user) == ["level 1"]


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_ending_the_transaction_inside_a_savepoint_is_refused_and_undoes_nothing_outside(
    persistence_engine: Engine, user: str, end: str
):
    with UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="outer")
        with pytest.raises(PersistenceError, match="savepoint"), uow.savepoint():
            uow.tasks.create(user_id=user, title="inner")
            getattr(uow, end)()  # refused: the savepoint would be cut in half
        # The refusal left the savepoint with an exception: only its own work is undone.
        assert [t.title for t in uow.tasks.list(user_id=user)] == ["outer"]
    assert committed_titles(persistence_engine, user) == ["outer"]


def test_leaving_the_unit_of_work_with_a_savepoint_still_open_commits_none_of_it(
    persistence_engine: Engine, user: str
):
    uow = UnitOfWork(persistence_engine)
    with pytest.raises(PersistenceError, match="savepoint"), uow:
        uow.tasks.create(user_id=user, title="before the savepoint")
        unfinished = uow.savepoint()
        unfinished.__enter__()  # never left: the block ends first
        uow.tasks.create(user_id=user, title="inside the unfinished savepoint")
    unfinished.__exit__(None, None, None)  # left late: the block already rolled it back
    assert committed_titles(persistence_engine, user) == []
    with uow:  # the unit of work is not stuck half-way
        uow.tasks.create(user_id=user, title="next")
    assert committed_titles(persistence_engine, user) == ["next"]


def test_results_stay_readable_after_the_block(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow:
        created = uow.tasks.create(user_id=user, title="t", description="d")
        listed = uow.tasks.list(user_id=user)
        toggled = uow.tasks.toggle_complete(user_id=user, task_id=created.id)
    for task, complete in ((created, False), (listed[0], False), (toggled, True)):
        assert (task.title, task.description, task.complete) == ("t", "d", complete)
        assert task.created_at is not None
        assert task.updated_at is not None
        assert task.model_dump()["user_id"] == user


def test_tasks_outside_an_active_block_raise_a_clear_error(persistence_engine: Engine, user: str):
    uow = UnitOfWork(persistence_engine)
    with pytest.raises(PersistenceError, match="not active"):
        _ = uow.tasks
    with uow:
        repository = uow.tasks
    with pytest.raises(PersistenceError, match="not active"):
        repository.create(user_id=user, title="after the block")
    with pytest.raises(PersistenceError, match="not active"):
        uow.commit()
    assert committed_titles(persistence_engine, user) == []


def test_a_unit_of_work_can_be_entered_again_but_not_twice_at_once(
    persistence_engine: Engine, user: str
):
    uow = UnitOfWork(persistence_engine)
    with uow:
        uow.tasks.create(user_id=user, title="one")
        with pytest.raises(PersistenceError, match="already active"), uow:
            pass
    with uow:
        uow.tasks.create(user_id=user, title="two")
    assert committed_titles(persistence_engine, user) == ["one", "two"]


def test_many_threads_each_with_their_own_unit_of_work(persistence_engine: Engine, user: str):
    barrier = threading.Barrier(12)

    def work(n: int) -> int:
        barrier.wait()
        with UnitOfWork(persistence_engine) as uow:
            task = uow.tasks.create(user_id=user, title=f"thread {n}")
            uow.tasks.toggle_complete(user_id=user, task_id=task.id)
            return uow.tasks.count(user_id=user)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(work, range(12)))
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user, complete=True) == 12
    assert sorted(committed_titles(persistence_engine, user)) == sorted(
        f"thread {n}" for n in range(12)
    )


def test_default_unit_of_work_uses_the_configured_database(persistence_engine: Engine, user: str):
    # `persistence_database` points DATABASE_URL at the test database.
    with UnitOfWork() as uow:
        uow.tasks.create(user_id=user, title="via DATABASE_URL")
    assert committed_titles(persistence_engine, user) == ["via DATABASE_URL"]


@pytest.mark.database_only
@pytest.mark.parametrize(
    "level", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "serializable"]
)
def test_isolation_level_is_applied_to_the_transaction(
    persistence_engine: Engine, user: str, level: str
):
    with UnitOfWork(persistence_engine, isolation_level=level) as uow:
        uow.tasks.create(user_id=user, title="t")
        shown = execute_in(uow, select(func.current_setting("transaction_isolation")))[0][0]
    assert shown == level.lower()


def test_read_only_unit_of_work_refuses_writes(persistence_engine: Engine, user: str):
    with (
        pytest.raises(DatabaseError, match="read-only") as raised,
        UnitOfWork(persistence_engine, read_only=True) as uow,
    ):
        uow.tasks.create(user_id=user, title="t")
    assert raised.value.sqlstate == "25006"
    assert committed_titles(persistence_engine, user) == []


def test_an_unknown_isolation_level_is_rejected_up_front():
    with pytest.raises(TaskValidationError, match="isolation_level"):
        UnitOfWork(isolation_level="CHAOS")


@pytest.mark.parametrize("given", ["serializable", "repeatable_read", "Read Committed"])
def test_isolation_levels_are_accepted_as_postgresql_spells_them_in_any_case(
    persistence_engine: Engine, user: str, given: str
):
    with UnitOfWork(persistence_engine, isolation_level=given) as uow:
        uow.tasks.create(user_id=user, title="t")
    assert committed_titles(persistence_engine, user) == ["t"]


@pytest.mark.database_only
def test_a_clean_exit_after_a_swallowed_server_error_does_not_pass_for_a_commit(
    persistence_engine: Engine, user: str
):
    from sqlalchemy import insert

    with (
        pytest.raises(DatabaseError, match="nothing since the last commit") as raised,
        UnitOfWork(persistence_engine) as uow,
    ):
        uow.tasks.create(user_id=user, title="lost with the transaction")
        # Around validation, straight to the table: the server refuses it, and the
        # application swallows the error and goes on.
        with contextlib.suppress(Exception):
            execute_in(uow, insert(Task).values(user_id=user, title=" ", complete=False))
    assert raised.value.sqlstate == "25P02"
    assert committed_titles(persistence_engine, user) == []
    with UnitOfWork(persistence_engine) as uow:  # and the connection is usable again
        uow.tasks.create(user_id=user, title="next")
    assert committed_titles(persistence_engine, user) == ["next"]
