"""The pytest plugin's fixtures: real commits inside a test, nothing left after it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from persistence import AsyncUnitOfWork, UnitOfWork
from persistence.testing import AsyncFakeUnitOfWork, FakeDatabase, FakeUnitOfWork, TestDatabase
from tests.conftest import committed_count


def test_uow_commits_are_seen_inside_the_test_but_never_committed_outside(
    uow: UnitOfWork, persistence_database: TestDatabase, user: str
):
    with uow:
        uow.tasks.create(user_id=user, title="t")
    with uow:  # a later unit of work in the same test sees it
        assert uow.tasks.count(user_id=user) == 1
    assert committed_count(persistence_database.engine, user) == 0


def test_task_factory_makes_valid_tasks_through_the_public_api(task_factory, uow, user):
    made = task_factory.create_batch(3, user_id=user, title="  padded  ")
    assert [t.title for t in made] == ["padded"] * 3  # validation ran: stripped
    with pytest.raises(ValueError, match="title"):
        task_factory(user_id=user, title="   ")
    built = task_factory.build(user_id=user)
    assert built.id is None
    with uow:
        assert uow.tasks.count(user_id=user) == 3


@pytest.mark.asyncio
async def test_async_uow_commits_are_seen_inside_the_test_but_never_committed_outside(
    async_uow: AsyncUnitOfWork, persistence_database: TestDatabase, user: str
):
    async with async_uow:
        await async_uow.tasks.create(user_id=user, title="t")
    async with async_uow:
        assert await async_uow.tasks.count(user_id=user) == 1
    assert committed_count(persistence_database.engine, user) == 0


@pytest.mark.asyncio
async def test_the_async_fake_shares_a_database_with_the_sync_fake(user: str):
    database = FakeDatabase()
    async with AsyncFakeUnitOfWork(database) as async_fake:
        await async_fake.tasks.create(user_id=user, title="from async")
    with FakeUnitOfWork(database) as fake:
        assert [t.title for t in fake.tasks.list(user_id=user)] == ["from async"]


def test_code_under_test_that_builds_its_own_unit_of_work_joins_the_tests_transaction(
    task_factory, persistence_database: TestDatabase, user: str
):
    task_factory.create_batch(2, user_id=user)

    def service() -> int:  # application code: it makes its own unit of work
        with UnitOfWork() as own:
            own.tasks.create(user_id=user, title="by the service")
            return own.tasks.count(user_id=user)

    assert service() == 3
    assert committed_count(persistence_database.engine, user) == 0


@pytest.mark.asyncio
async def test_async_code_under_test_joins_the_async_tests_transaction(
    async_uow: AsyncUnitOfWork, persistence_database: TestDatabase, user: str
):
    async with async_uow:
        await async_uow.tasks.create_many(user_id=user, items=[{"title": "seeded"}])
    async with AsyncUnitOfWork() as own:
        assert await own.tasks.count(user_id=user) == 1
    assert committed_count(persistence_database.engine, user) == 0


def test_the_kit_exports_the_names_users_reach_for():
    import persistence.testing as kit
    from persistence.factories import TaskFactory

    assert kit.TaskFactory is TaskFactory
    assert kit.FakeAsyncUnitOfWork is AsyncFakeUnitOfWork


def test_the_kit_never_reads_the_users_read_replicas(tmp_path: Path):
    # DATABASE_READ_URL names the user's replicas, holding the user's data: read-only
    # units of work in tests must read the test database, not those.
    (tmp_path / "test_reads.py").write_text(
        textwrap.dedent(
            """
            from persistence import UnitOfWork, load_settings

            def test_read_only_units_read_the_test_database(persistence_database):
                user = "reader"
                assert load_settings().read_urls == ()
                with UnitOfWork(persistence_database.engine) as uow:
                    uow.tasks.create(user_id=user, title="made in the test database")
                with UnitOfWork(persistence_database.engine, read_only=True) as uow:
                    titles = [t.title for t in uow.tasks.list(user_id=user)]
                assert titles == ["made in the test database"]
            """
        )
    )
    environment = dict(os.environ, DATABASE_READ_URL="postgresql://someone@127.0.0.1:1/prod")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_reads.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
