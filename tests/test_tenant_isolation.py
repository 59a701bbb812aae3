"""Model-based: random operations by several users, checked against an in-memory model."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from persistence import Task, TaskNotFoundError, UnitOfWork

USERS = ("alice", "bob", "carol", "mallory")
SEEDS = range(8)
UNITS_PER_SEED = 30


@dataclass
class Row:
    user_id: str
    title: str
    description: str | None
    complete: bool


class Abandon(Exception):
    """Planted to make a unit of work roll back."""


def _same(task: Task, row: Row) -> bool:
    return (task.user_id, task.title, task.description, task.complete) == (
        row.user_id,
        row.title,
        row.description,
        row.complete,
    )


def _unit(uow: UnitOfWork, rng: random.Random, model: dict[int, Row], tag: str) -> None:
    """A few random operations, each checked against `model` (changed in place)."""
    for step in range(rng.randint(1, 6)):
        user = rng.choice(USERS)
        known = list(model)
        task_id = rng.choice(known) if known and rng.random() < 0.9 else rng.randint(1, 10**7)
        row = model.get(task_id)
        mine = row is not None and row.user_id == user
        op = rng.choice(["create", "many", "get", "list", "count", "update", "toggle", "delete"])
        if op == "create":
            title = f"{tag}-{step}"
            task = uow.tasks.create(user_id=user, title=title, description=rng.choice([None, "d"]))
            model[task.id] = Row(user, title, task.description, False)
        elif op == "many":
            items = [{"title": f"{tag}-{step}-{i}"} for i in range(rng.randint(1, 4))]
            for task in uow.tasks.create_many(user_id=user, items=items):
                model[task.id] = Row(user, task.title, None, False)
        elif op == "get":
            got = uow.tasks.get(user_id=user, task_id=task_id)
            assert (got is not None) == mine
            assert got is None or (row is not None and _same(got, row))
        elif op == "list":
            listed = uow.tasks.list(user_id=user, limit=None)
            assert sorted(t.id for t in listed) == sorted(
                i for i, r in model.items() if r.user_id == user
            )
        elif op == "count":
            assert uow.tasks.count(user_id=user) == sum(r.user_id == user for r in model.values())
        elif not mine:
            with pytest.raises(TaskNotFoundError):
                if op == "update":
                    uow.tasks.update(user_id=user, task_id=task_id, title="stolen")
                elif op == "toggle":
                    uow.tasks.toggle_complete(user_id=user, task_id=task_id)
                else:
                    uow.tasks.delete(user_id=user, task_id=task_id)
        else:
            assert row is not None
            if op == "update":
                description = rng.choice([None, "changed"])
                task = uow.tasks.update(user_id=user, task_id=task_id, description=description)
                row.description = description
            elif op == "toggle":
                task = uow.tasks.toggle_complete(user_id=user, task_id=task_id)
                row.complete = not row.complete
            else:
                uow.tasks.delete(user_id=user, task_id=task_id)
                del model[task_id]
                continue
            assert _same(task, row)


@pytest.mark.parametrize("seed", SEEDS)
def test_no_operation_for_one_user_changes_or_reveals_anothers_task(
    persistence_engine: Engine, seed: int
):
    rng = random.Random(seed)
    model: dict[int, Row] = {}
    for unit in range(UNITS_PER_SEED):
        working = copy.deepcopy(model)
        abandon = rng.random() < 0.2
        try:
            with UnitOfWork(persistence_engine) as uow:
                _unit(uow, rng, working, f"s{seed}u{unit}")
                if abandon:
                    raise Abandon
        except Abandon:
            working = model  # rolled back: the model stays as it was
        model = working
        # After every unit of work, each user sees exactly their own tasks, unchanged.
        with UnitOfWork(persistence_engine) as uow:
            for user in USERS:
                listed = {t.id: t for t in uow.tasks.list(user_id=user, limit=None)}
                expected = {i: r for i, r in model.items() if r.user_id == user}
                assert listed.keys() == expected.keys()
                assert all(_same(listed[i], expected[i]) for i in expected)
