"""Bulk create (validated first, all or nothing) and keyset pages served by the index."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Engine

from persistence import TaskValidationError, UnitOfWork
from persistence.operations import list_tasks
from tests.conftest import libpq_url


def test_create_many_returns_the_tasks_in_the_items_order(uow: UnitOfWork, user: str):
    items = [
        {"title": f"  task {i}  ", "description": f"d{i}" if i % 2 else None} for i in range(25)
    ]
    with uow:
        made = uow.tasks.create_many(user_id=user, items=items)
        assert uow.tasks.count(user_id=user) == 25
    assert [t.title for t in made] == [f"task {i}" for i in range(25)]
    assert [t.description for t in made] == [f"d{i}" if i % 2 else None for i in range(25)]
    assert all(t.user_id == user and t.complete is False for t in made)
    assert [t.id for t in made] == sorted(t.id for t in made)


def test_create_many_with_no_items_writes_nothing(uow: UnitOfWork, user: str):
    with uow:
        assert uow.tasks.create_many(user_id=user, items=[]) == []
        assert uow.tasks.count(user_id=user) == 0


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"title": "ok"}, {"title": "  "}], "items[1].title"),
        ([{"title": "ok"}, {"title": "ok", "description": "d" * 1001}], "items[1].description"),
        ([{"title": "ok"}, {"title": 3}], "items[1].title"),
        ([{"title": "ok"}, {"description": "no title"}], "items[1].title"),
        ([{"title": "ok"}, {"title": "x", "user_id": "someone-else"}], "items[1].user_id"),
        ([{"title": "ok"}, {"title": "x", "complete": True}], "items[1].complete"),
        ([{"title": "ok"}, "just a title"], "items[1]"),
        ({"title": "not a list"}, "items"),
        ("title", "items"),
    ],
)
def test_create_many_validates_every_item_first_and_writes_nothing_if_one_is_bad(
    persistence_engine: Engine, user: str, items: object, field: str
):
    with UnitOfWork(persistence_engine) as uow:
        with pytest.raises(TaskValidationError) as raised:
            uow.tasks.create_many(user_id=user, items=items)
        assert raised.value.field == field
        assert uow.tasks.count(user_id=user) == 0
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user) == 0


def test_create_many_is_scoped_to_the_calls_user(uow: UnitOfWork, user: str):
    with uow:
        uow.tasks.create_many(user_id=user, items=[{"title": "a"}, {"title": "b"}])
        assert uow.tasks.count(user_id=user + "-other") == 0
        assert uow.tasks.count(user_id=user) == 2


def test_pages_with_after_walk_every_task_once_newest_first(uow: UnitOfWork, user: str):
    with uow:
        uow.tasks.create_many(user_id=user, items=[{"title": f"t{i}"} for i in range(23)])
    with uow:
        uow.tasks.create_many(user_id=user, items=[{"title": f"u{i}"} for i in range(7)])
    with uow:
        everything = uow.tasks.list(user_id=user, limit=None)
        pages, after = [], None
        while True:
            page = uow.tasks.list(user_id=user, limit=8, after=after)
            if not page:
                break
            pages.append(page)
            after = page[-1]
    assert [len(p) for p in pages] == [8, 8, 8, 6]
    assert [t.id for p in pages for t in p] == [t.id for t in everything]
    assert pages[0][0].title == "u6"


def test_pages_respect_the_completion_filter(uow: UnitOfWork, task_factory, user: str):
    task_factory.create_batch(5, user_id=user, complete=True)
    task_factory.create_batch(5, user_id=user)
    with uow:
        first = uow.tasks.list(user_id=user, complete=True, limit=3)
        rest = uow.tasks.list(user_id=user, complete=True, limit=3, after=first[-1])
    assert len(first) == 3
    assert len(rest) == 2
    assert all(t.complete for t in first + rest)


@pytest.mark.parametrize("after", [42, "task", {"id": 1}])
def test_after_must_be_a_task(uow: UnitOfWork, user: str, after: object):
    with uow, pytest.raises(TaskValidationError) as raised:
        uow.tasks.list(user_id=user, after=after)
    assert raised.value.field == "after"


@pytest.mark.database_only
def test_a_later_page_is_an_index_scan_with_no_sort(persistence_engine: Engine, user: str):
    with UnitOfWork(persistence_engine) as uow:
        for n in range(4):
            uow.tasks.create_many(
                user_id=f"{user}-{n}", items=[{"title": f"t{i}"} for i in range(500)]
            )
        page = uow.tasks.list(user_id=f"{user}-2", limit=50)
    # The very statement the repository sends for the next page, with its parameters.
    operation = list_tasks(user_id=f"{user}-2", complete=None, limit=50, after=page[-1])
    assert operation.statement is not None
    with psycopg.connect(libpq_url(str(persistence_engine.url.render_as_string(False)))) as raw:
        raw.execute("ANALYZE tasks")
        explained = raw.execute("EXPLAIN " + operation.statement.sql, operation.args)
        plan = "\n".join(row[0] for row in explained)
    assert "Index Scan Backward using ix_tasks_user_id_created_at_id" in plan
    assert "Sort" not in plan


def test_create_many_takes_any_mapping_as_an_item(uow: UnitOfWork, user: str):
    from types import MappingProxyType

    with uow:
        made = uow.tasks.create_many(user_id=user, items=[MappingProxyType({"title": "ro"})])
    assert [t.title for t in made] == ["ro"]


def test_iterate_walks_every_task_newest_first_a_page_at_a_time(uow: UnitOfWork, user: str):
    with uow:
        uow.tasks.create_many(user_id=user, items=[{"title": f"t{i}"} for i in range(23)])
        everything = uow.tasks.list(user_id=user, limit=None)
        walked = list(uow.tasks.iterate(user_id=user, page_size=5))
    assert [t.id for t in walked] == [t.id for t in everything]
    assert len(walked) == 23


def test_iterate_keeps_to_the_completion_filter(uow: UnitOfWork, task_factory, user: str):
    task_factory.create_batch(4, user_id=user, complete=True)
    task_factory.create_batch(3, user_id=user)
    with uow:
        done = list(uow.tasks.iterate(user_id=user, complete=True, page_size=2))
    assert len(done) == 4
    assert all(t.complete for t in done)


@pytest.mark.parametrize("page_size", [0, -1, 10**9, 2.5, "10", None])
def test_iterate_checks_its_arguments_when_called(uow: UnitOfWork, user: str, page_size):
    with uow, pytest.raises(TaskValidationError) as raised:
        uow.tasks.iterate(user_id=user, page_size=page_size)  # not even iterated
    assert raised.value.field == "page_size"


def test_limit_none_never_returns_a_silently_cut_list(
    uow: UnitOfWork, user: str, monkeypatch: pytest.MonkeyPatch
):
    import persistence.operations

    monkeypatch.setattr(persistence.operations, "LIST_LIMIT_MAX", 5)
    with uow:
        uow.tasks.create_many(user_id=user, items=[{"title": f"t{i}"} for i in range(5)])
        assert len(uow.tasks.list(user_id=user, limit=None)) == 5  # all of them: fine
        uow.tasks.create(user_id=user, title="one too many")
        with pytest.raises(TaskValidationError, match="iterate") as raised:
            uow.tasks.list(user_id=user, limit=None)
        assert raised.value.field == "limit"
        assert len(list(uow.tasks.iterate(user_id=user, page_size=2))) == 6


def test_a_limit_past_the_maximum_is_capped_at_it(
    uow: UnitOfWork, user: str, monkeypatch: pytest.MonkeyPatch
):
    import persistence.models

    monkeypatch.setattr(persistence.models, "LIST_LIMIT_MAX", 3)
    with uow:
        uow.tasks.create_many(user_id=user, items=[{"title": f"t{i}"} for i in range(5)])
        assert len(uow.tasks.list(user_id=user, limit=4)) == 3
