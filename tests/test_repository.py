"""Every task operation, its scoping to one user, ordering and update semantics."""

from __future__ import annotations

from datetime import UTC

import pytest

from persistence import TaskNotFoundError, UnitOfWork


def test_create_returns_the_stored_task_with_server_set_fields(uow: UnitOfWork, user: str):
    with uow:
        task = uow.tasks.create(user_id=user, title="Buy milk", description="2 litres")
    assert isinstance(task.id, int)
    assert task.id > 0
    assert (task.user_id, task.title, task.description, task.complete) == (
        user,
        "Buy milk",
        "2 litres",
        False,
    )
    assert task.created_at.tzinfo is not None
    assert task.created_at.utcoffset() == UTC.utcoffset(None)
    assert task.updated_at == task.created_at


def test_create_strips_the_title_and_defaults_description_to_none(uow: UnitOfWork, user: str):
    with uow:
        task = uow.tasks.create(user_id=user, title="  hi  ")
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert stored.title == "hi"
    assert stored.description is None


def test_get_returns_the_task_or_none(uow: UnitOfWork, task_factory, user: str):
    task = task_factory(user_id=user, title="Read")
    with uow:
        found = uow.tasks.get(user_id=user, task_id=task.id)
        missing = uow.tasks.get(user_id=user, task_id=task.id + 1_000_000)
    assert found is not None
    assert (found.id, found.title) == (task.id, "Read")
    assert missing is None


@pytest.mark.parametrize("task_id", [0, -1, 2**63, 2**100])
def test_ids_that_cannot_exist_are_simply_not_found(uow: UnitOfWork, user: str, task_id: int):
    with uow:
        assert uow.tasks.get(user_id=user, task_id=task_id) is None
        with pytest.raises(TaskNotFoundError):
            uow.tasks.update(user_id=user, task_id=task_id, title="x")
        with pytest.raises(TaskNotFoundError):
            uow.tasks.toggle_complete(user_id=user, task_id=task_id)
        with pytest.raises(TaskNotFoundError):
            uow.tasks.delete(user_id=user, task_id=task_id)
        # The transaction is still healthy after all of that.
        assert uow.tasks.count(user_id=user) == 0


def test_list_is_newest_first_even_within_one_transaction(uow: UnitOfWork, user: str):
    with uow:
        made = [uow.tasks.create(user_id=user, title=f"t{i}") for i in range(5)]
        listed = uow.tasks.list(user_id=user)
    assert [t.id for t in listed] == [t.id for t in reversed(made)]


def test_list_orders_by_creation_time_across_transactions(uow: UnitOfWork, user: str):
    ids = []
    for i in range(3):
        with uow:
            ids.append(uow.tasks.create(user_id=user, title=f"t{i}").id)
    with uow:
        listed = uow.tasks.list(user_id=user)
    assert [t.id for t in listed] == list(reversed(ids))
    assert listed[0].created_at >= listed[1].created_at >= listed[2].created_at


def test_list_filters_by_completion_and_caps_with_limit(uow: UnitOfWork, task_factory, user: str):
    task_factory.create_batch(3, user_id=user, complete=True)
    task_factory.create_batch(4, user_id=user)
    with uow:
        assert len(uow.tasks.list(user_id=user, complete=True)) == 3
        assert len(uow.tasks.list(user_id=user, complete=False)) == 4
        assert len(uow.tasks.list(user_id=user, complete=None)) == 7
        assert len(uow.tasks.list(user_id=user, limit=2)) == 2
        assert len(uow.tasks.list(user_id=user, limit=None)) == 7
        assert uow.tasks.list(user_id=user, limit=0) == []
        assert all(t.complete for t in uow.tasks.list(user_id=user, complete=True))


def test_list_caps_at_fifty_by_default(uow: UnitOfWork, task_factory, user: str):
    task_factory.create_batch(51, user_id=user)
    with uow:
        assert len(uow.tasks.list(user_id=user)) == 50


def test_count_counts_one_users_tasks_by_state(uow: UnitOfWork, task_factory, user: str):
    task_factory.create_batch(2, user_id=user, complete=True)
    task_factory.create_batch(3, user_id=user)
    task_factory.create_batch(4, user_id=user + "-other")
    with uow:
        assert uow.tasks.count(user_id=user) == 5
        assert uow.tasks.count(user_id=user, complete=True) == 2
        assert uow.tasks.count(user_id=user, complete=False) == 3


def test_update_changes_only_the_fields_passed(uow: UnitOfWork, task_factory, user: str):
    task = task_factory(user_id=user, title="Old", description="keep me")
    with uow:
        updated = uow.tasks.update(user_id=user, task_id=task.id, title="  New  ")
    assert (updated.title, updated.description, updated.complete) == ("New", "keep me", False)
    with uow:
        updated = uow.tasks.update(user_id=user, task_id=task.id, complete=True)
    assert (updated.title, updated.description, updated.complete) == ("New", "keep me", True)


def test_update_with_description_none_clears_it(uow: UnitOfWork, task_factory, user: str):
    task = task_factory(user_id=user, description="something")
    with uow:
        uow.tasks.update(user_id=user, task_id=task.id, description=None)
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert stored.description is None


def test_updated_at_advances_on_every_change_and_created_at_never_moves(uow: UnitOfWork, user: str):
    with uow:
        task = uow.tasks.create(user_id=user, title="t")
        created, stamps = task.created_at, [task.updated_at]
        # All in one transaction, where the server's statement clock may stand still.
        for _ in range(3):
            stamps.append(uow.tasks.toggle_complete(user_id=user, task_id=task.id).updated_at)
            stamps.append(uow.tasks.update(user_id=user, task_id=task.id, title="u").updated_at)
        final = uow.tasks.get(user_id=user, task_id=task.id)
    assert stamps == sorted(set(stamps))  # strictly increasing
    assert final is not None
    assert final.created_at == created


def test_toggle_complete_flips_the_flag_each_time(uow: UnitOfWork, task_factory, user: str):
    task = task_factory(user_id=user)
    with uow:
        states = [
            uow.tasks.toggle_complete(user_id=user, task_id=task.id).complete for _ in range(3)
        ]
    assert states == [True, False, True]


def test_delete_removes_the_task(uow: UnitOfWork, task_factory, user: str):
    task = task_factory(user_id=user)
    with uow:
        assert uow.tasks.delete(user_id=user, task_id=task.id) is None
        assert uow.tasks.get(user_id=user, task_id=task.id) is None
        with pytest.raises(TaskNotFoundError):
            uow.tasks.delete(user_id=user, task_id=task.id)


def test_another_users_task_behaves_exactly_like_a_missing_one(
    uow: UnitOfWork, task_factory, user: str
):
    alices = task_factory(user_id="alice-" + user, title="Alice's secret", description="d")
    bob = "bob-" + user
    with uow:
        assert uow.tasks.get(user_id=bob, task_id=alices.id) is None
        assert uow.tasks.list(user_id=bob) == []
        assert uow.tasks.count(user_id=bob) == 0
        for attempt in (
            lambda: uow.tasks.update(user_id=bob, task_id=alices.id, title="pwned"),
            lambda: uow.tasks.toggle_complete(user_id=bob, task_id=alices.id),
            lambda: uow.tasks.delete(user_id=bob, task_id=alices.id),
        ):
            with pytest.raises(TaskNotFoundError) as raised:
                attempt()
            assert "Alice" not in str(raised.value)
        untouched = uow.tasks.get(user_id="alice-" + user, task_id=alices.id)
    assert untouched is not None
    assert (untouched.title, untouched.description, untouched.complete) == (
        "Alice's secret",
        "d",
        False,
    )


def test_not_found_error_says_which_task_and_user(uow: UnitOfWork, user: str):
    with uow, pytest.raises(TaskNotFoundError, match=r"task 123456789 not found") as raised:
        uow.tasks.toggle_complete(user_id=user, task_id=123456789)
    assert raised.value.task_id == 123456789
    assert raised.value.user_id == user


def test_repository_methods_take_keyword_arguments_only(uow: UnitOfWork, user: str):
    with uow, pytest.raises(TypeError):
        uow.tasks.create(user, "title")


def test_each_result_is_a_snapshot_unchanged_by_later_operations(uow: UnitOfWork, user: str):
    with uow:
        created = uow.tasks.create(user_id=user, title="before")
        updated = uow.tasks.update(user_id=user, task_id=created.id, title="after")
        toggled = uow.tasks.toggle_complete(user_id=user, task_id=created.id)
    assert (created.title, created.complete) == ("before", False)
    assert (updated.title, updated.complete) == ("after", False)
    assert (toggled.title, toggled.complete) == ("after", True)
    assert created.updated_at < updated.updated_at < toggled.updated_at


def test_changing_a_returned_task_writes_nothing(uow: UnitOfWork, user: str):
    with uow:
        task = uow.tasks.create(user_id=user, title="real")
        task.title = ""
        task.user_id = "someone else"
    with uow:
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert stored.title == "real"


@pytest.mark.database_only
def test_timestamps_are_in_utc_whatever_the_servers_time_zone(persistence_database, user: str):
    import uuid
    from datetime import UTC

    from sqlalchemy import text

    from persistence import create_engine, init_db
    from persistence.database import normalize_url

    name = f"persistence_tz_{uuid.uuid4().hex[:8]}"
    admin = create_engine(persistence_database.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        connection.execute(text(f"""ALTER DATABASE "{name}" SET TimeZone = 'Asia/Kathmandu'"""))
    url = normalize_url(persistence_database.url).set(database=name)
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        init_db(engine)
        seen = []
        for _ in range(3):  # a new connection's first result, then the ones after
            with UnitOfWork(engine) as uow:
                task = uow.tasks.create(user_id=user, title="when?")
                seen += [task, *uow.tasks.list(user_id=user, limit=1)]
        for task in seen:
            assert task.created_at.tzinfo is UTC
            assert task.updated_at.tzinfo is UTC
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT created_at FROM tasks WHERE id = :id"), {"id": seen[0].id}
            ).scalar_one()
        assert stored == seen[0].created_at  # the same instant
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
