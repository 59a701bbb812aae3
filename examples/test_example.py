"""How a project that depends on `persistence` tests its own code.

Nothing to set up: installing `todo-task-persistence[embedded,test]` registers the pytest plugin,
whose fixtures give a throwaway database (embedded PostgreSQL unless TEST_DATABASE_URL
is set), a unit of work rolled back after each test, and a task factory.
"""

import pytest

from persistence import TaskNotFoundError, UnitOfWork
from persistence.testing import FakeUnitOfWork


def complete_all(uow: UnitOfWork | FakeUnitOfWork, user_id: str) -> int:
    """The application code under test: mark every open task of a user complete."""
    with uow:
        open_tasks = uow.tasks.list(user_id=user_id, complete=False, limit=None)
        for task in open_tasks:
            uow.tasks.toggle_complete(user_id=user_id, task_id=task.id)
    return len(open_tasks)


def test_completes_only_that_users_open_tasks(uow, task_factory):
    task_factory.create_batch(3, user_id="alice")
    task_factory(user_id="alice", complete=True)
    bobs = task_factory(user_id="bob")

    assert complete_all(uow, "alice") == 3

    with uow:
        assert uow.tasks.count(user_id="alice", complete=False) == 0
        assert uow.tasks.get(user_id="bob", task_id=bobs.id).complete is False


def test_the_same_code_against_the_in_memory_fake():
    fake = FakeUnitOfWork()
    with fake:
        fake.tasks.create(user_id="alice", title="Water the plants")
    assert complete_all(fake, "alice") == 1
    with fake:
        with pytest.raises(TaskNotFoundError):
            fake.tasks.delete(user_id="bob", task_id=1)  # alice's task, not bob's
        assert fake.tasks.count(user_id="alice", complete=True) == 1
