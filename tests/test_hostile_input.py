"""Hostile input, generated: every value round-trips verbatim or is refused before SQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from persistence import PersistenceError, TaskValidationError, UnitOfWork

# Every kind of character: controls, NUL, lone surrogates, RTL marks, combining marks...
ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=300)
NASTY = st.sampled_from(
    [
        "'; DROP TABLE tasks; --",
        "%s %(title)s {0} {title} %n %%",
        "\u202e\u0645\u0631\u062d\u0628\u0627 e\u0301\u0301 \U0001f680",
        "\x00",
        "\ud800",
        "\x1b[31mred\x1b[0m\r\n\t\x0b\x0c",
        "x" * 10_000,
        " " * 10_000,
        "\u200b\ufeff",
    ]
)
TEXT = st.one_of(ANY_TEXT, NASTY, st.builds(lambda a, b: a + b, NASTY, ANY_TEXT))
NOT_TEXT = st.one_of(
    st.integers(),
    st.binary(max_size=20),
    st.lists(st.text(max_size=3), max_size=3),
    st.booleans(),
    st.floats(allow_nan=True),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _clean(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def title_is_valid(title: str) -> bool:
    return _clean(title) and 1 <= len(title.strip()) <= 200


def description_is_valid(description: str | None) -> bool:
    return description is None or (_clean(description) and len(description) <= 1000)


def user_is_valid(user_id: str) -> bool:
    return _clean(user_id) and bool(user_id.strip()) and len(user_id) <= 255


@EXAMPLES
@given(title=TEXT, description=st.one_of(st.none(), TEXT))
def test_any_title_and_description_round_trip_or_are_refused(
    persistence_engine: Engine, title: str, description: str | None
):
    user = f"hostile-{uuid.uuid4().hex}"
    with UnitOfWork(persistence_engine) as uow:
        if title_is_valid(title) and description_is_valid(description):
            created = uow.tasks.create(user_id=user, title=title, description=description)
        else:
            with pytest.raises(TaskValidationError):
                uow.tasks.create(user_id=user, title=title, description=description)
            created = None
        # Still usable after a refusal, and nothing half-written.
        assert uow.tasks.count(user_id=user) == (1 if created else 0)
    if created is None:
        return
    with UnitOfWork(persistence_engine) as uow:
        stored = uow.tasks.get(user_id=user, task_id=created.id)
    assert stored is not None
    assert (stored.title, stored.description) == (title.strip(), description)


@EXAMPLES
@given(user_id=TEXT)
def test_any_user_id_is_kept_verbatim_or_refused(persistence_engine: Engine, user_id: str):
    with UnitOfWork(persistence_engine) as uow:
        if not user_is_valid(user_id):
            with pytest.raises(TaskValidationError) as raised:
                uow.tasks.create(user_id=user_id, title="t")
            assert raised.value.field == "user_id"
            return
        task = uow.tasks.create(user_id=user_id, title="t")
        assert next(t.id for t in uow.tasks.list(user_id=user_id, limit=None)) == task.id
        uow.tasks.delete(user_id=user_id, task_id=task.id)


def _call(uow: UnitOfWork, method: str, arguments: dict[str, Any]) -> Any:
    return getattr(uow.tasks, method)(**arguments)


CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("create", {"user_id": "u", "title": "t"}, "user_id"),
    ("create", {"user_id": "u", "title": "t"}, "title"),
    ("create", {"user_id": "u", "title": "t", "description": None}, "description"),
    ("get", {"user_id": "u", "task_id": 1}, "task_id"),
    ("get", {"user_id": "u", "task_id": 1}, "user_id"),
    ("list", {"user_id": "u"}, "user_id"),
    ("list", {"user_id": "u", "complete": None}, "complete"),
    ("list", {"user_id": "u", "limit": 5}, "limit"),
    ("list", {"user_id": "u", "after": None}, "after"),
    ("count", {"user_id": "u", "complete": None}, "complete"),
    ("update", {"user_id": "u", "task_id": 1, "title": "t"}, "title"),
    ("update", {"user_id": "u", "task_id": 1, "complete": True}, "complete"),
    ("update", {"user_id": "u", "task_id": 1}, "task_id"),
    ("toggle_complete", {"user_id": "u", "task_id": 1}, "task_id"),
    ("delete", {"user_id": "u", "task_id": 1}, "task_id"),
    ("create_many", {"user_id": "u", "items": []}, "items"),
]


@EXAMPLES
@given(call=st.sampled_from(CALLS), wrong=NOT_TEXT)
def test_a_wrong_type_anywhere_is_a_validation_error(
    persistence_engine: Engine, call: tuple[str, dict[str, Any], str], wrong: object
):
    method, arguments, field = call
    if field in {"limit", "task_id"} and isinstance(wrong, int) and not isinstance(wrong, bool):
        return  # an int is the right type there
    if field in {"complete"} and isinstance(wrong, bool):
        return
    if field == "items" and isinstance(wrong, list) and not wrong:
        return  # an empty list of items is valid
    with UnitOfWork(persistence_engine) as uow:
        with pytest.raises(TaskValidationError) as raised:
            _call(uow, method, {**arguments, field: wrong})
        assert raised.value.field.split("[")[0].split(".")[0] == field
        assert uow.tasks.count(user_id="u") == 0


@EXAMPLES
@given(task_id=st.integers())
def test_any_int_id_is_found_or_not_found_never_a_driver_error(
    persistence_engine: Engine, task_id: int
):
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.get(user_id="nobody", task_id=task_id) is None
        for method in ("update", "toggle_complete", "delete"):
            extra = {"title": "t"} if method == "update" else {}
            with pytest.raises(PersistenceError) as raised:
                _call(uow, method, {"user_id": "nobody", "task_id": task_id, **extra})
            assert type(raised.value).__name__ == "TaskNotFoundError"
