"""Bad input is refused before anything reaches the database, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from persistence import PersistenceError, TaskValidationError, UnitOfWork


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user_id", "", "blank"),
        ("user_id", "   ", "blank"),
        ("user_id", "u" * 256, "at most 255"),
        ("user_id", 42, "must be a str, got int"),
        ("user_id", None, "must be a str, got NoneType"),
        ("user_id", b"alice", "must be a str, got bytes"),
        ("title", "", "blank"),
        ("title", " \t\n ", "blank"),
        ("title", "t" * 201, "at most 200"),
        ("title", 7, "must be a str, got int"),
        ("title", None, "must be a str, got NoneType"),
        ("title", ["x"], "must be a str, got list"),
        ("description", "d" * 1001, "at most 1000"),
        ("description", 3.5, "must be a str, got float"),
        ("description", b"x", "must be a str, got bytes"),
    ]
    + [("title", text, reason) for reason, text in [("NUL", "a\x00b"), ("surrogate", "a\ud800")]]
    + [("user_id", "a\x00", "NUL"), ("description", "x\udfff", "surrogate")],
)
def test_create_rejects_bad_fields_naming_them(
    uow: UnitOfWork, user: str, field: str, value: object, message: str
):
    arguments: dict[str, Any] = {"user_id": user, "title": "ok", "description": None}
    arguments[field] = value
    with uow:
        with pytest.raises(TaskValidationError, match=message) as raised:
            uow.tasks.create(**arguments)
        assert raised.value.field == field
        assert str(raised.value).startswith(f"{field}:")
        # Nothing was written and the transaction is still usable.
        assert uow.tasks.count(user_id=user) == 0
        assert uow.tasks.create(user_id=user, title="still works").id


def test_limits_are_inclusive(uow: UnitOfWork):
    with uow:
        task = uow.tasks.create(user_id="u" * 255, title="t" * 200, description="d" * 1000)
    assert (len(task.user_id), len(task.title), len(task.description or "")) == (255, 200, 1000)


def test_the_title_limit_counts_characters_after_stripping(uow: UnitOfWork, user: str):
    with uow:
        assert uow.tasks.create(user_id=user, title="  " + "t" * 200 + "  ").title == "t" * 200


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", "  ", "blank"),
        ("title", None, "must not be None"),
        ("title", 1, "must be a str"),
        ("description", "d" * 1001, "at most 1000"),
        ("complete", 1, "must be a bool, got int"),
        ("complete", "yes", "must be a bool, got str"),
        ("complete", None, "must not be None"),
    ],
)
def test_update_rejects_bad_fields_and_changes_nothing(
    uow: UnitOfWork, task_factory, user: str, field: str, value: object, message: str
):
    task = task_factory(user_id=user, title="Original", description="orig")
    with uow:
        with pytest.raises(TaskValidationError, match=message) as raised:
            uow.tasks.update(user_id=user, task_id=task.id, **{field: value})
        assert raised.value.field == field
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert (stored.title, stored.description, stored.complete) == ("Original", "orig", False)


@pytest.mark.parametrize("task_id", ["1", 1.0, None, True, b"1", [1]])
def test_a_task_id_must_be_an_int(uow: UnitOfWork, user: str, task_id: object):
    with uow:
        for call in (
            uow.tasks.get,
            uow.tasks.update,
            uow.tasks.toggle_complete,
            uow.tasks.delete,
        ):
            with pytest.raises(TaskValidationError, match="must be an int") as raised:
                call(user_id=user, task_id=task_id)
            assert raised.value.field == "task_id"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"complete": 1}, "complete"),
        ({"complete": "true"}, "complete"),
        ({"limit": -1}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"user_id": ""}, "user_id"),
    ],
)
def test_list_and_count_reject_bad_arguments(
    uow: UnitOfWork, user: str, arguments: dict[str, Any], field: str
):
    with uow:
        with pytest.raises(TaskValidationError) as raised:
            uow.tasks.list(**{"user_id": user, **arguments})
        assert raised.value.field == field
        if field != "limit":
            with pytest.raises(TaskValidationError):
                uow.tasks.count(**{"user_id": user, **arguments})


def test_a_huge_limit_is_no_overflow(uow: UnitOfWork, task_factory, user: str):
    task_factory.create_batch(2, user_id=user)
    with uow:
        assert len(uow.tasks.list(user_id=user, limit=10**30)) == 2


def test_validation_error_is_a_value_error_and_a_persistence_error():
    assert issubclass(TaskValidationError, ValueError)
    assert issubclass(TaskValidationError, PersistenceError)


def test_unexpected_keyword_arguments_are_refused(uow: UnitOfWork, user: str):
    with uow, pytest.raises(TypeError):
        uow.tasks.create(user_id=user, title="t", priority=1)


def test_text_round_trips_verbatim(persistence_engine: Engine, user: str):
    odd = "Ω ‮RTL‬ e\u0301 🚀 '; DROP TABLE tasks; -- %s {0} \\x00"
    with UnitOfWork(persistence_engine) as uow:
        task = uow.tasks.create(user_id=user + odd, title=odd, description=odd)
    with UnitOfWork(persistence_engine) as uow:
        stored = uow.tasks.get(user_id=user + odd, task_id=task.id)
    assert stored is not None
    assert (stored.title, stored.description) == (odd.strip(), odd)
