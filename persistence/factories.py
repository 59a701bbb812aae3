"""factory-boy factories that make valid tasks through the public API.

Importing it without factory-boy (the `test` extra) raises `MissingExtraError`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine

from persistence.extras import MissingExtraError
from persistence.models import Task, TaskCreate, validate
from persistence.unit_of_work import UnitOfWork

try:
    from factory.base import Factory
    from factory.declarations import Sequence
except ImportError:
    # The `test` extra brings factory-boy: say so, rather than which module is missing.
    raise MissingExtraError(
        "TaskFactory (persistence.testing.TaskFactory, the task_factory fixture)",
        "factory-boy",
        extra="test",
        module="factory",
    ) from None

__all__ = ["TaskFactory"]


class TaskFactory(Factory[Task]):
    """Valid tasks. `create()` goes through `uow.tasks.create` (validation included) and
    commits in its own unit of work on the bound engine or connection; `build()` validates
    and returns an unsaved `Task`. Bind it with `TaskFactory.bound_to(engine_or_connection)`.
    """

    class Meta:
        model = Task

    user_id = Sequence(lambda n: f"user-{n}")
    title = Sequence(lambda n: f"Task number {n}")
    description = None
    complete = False

    _bind: Engine | Connection | None = None

    @classmethod
    def bound_to(cls, bind: Engine | Connection) -> type[TaskFactory]:
        """A subclass of this factory whose tasks are written through `bind`."""
        return type(cls.__name__, (cls,), {"_bind": bind, "__module__": cls.__module__})

    @classmethod
    def _build(cls, model_class: type[Task], *args: Any, **kwargs: Any) -> Task:
        complete = kwargs.pop("complete", False)
        data = validate(TaskCreate, kwargs)
        return model_class(**data.model_dump(), complete=complete)

    @classmethod
    def _create(cls, model_class: type[Task], *args: Any, **kwargs: Any) -> Task:
        complete = kwargs.pop("complete", False)
        with UnitOfWork(cls._bind) as uow:
            task = uow.tasks.create(**kwargs)
            if complete:
                task = uow.tasks.update(user_id=task.user_id, task_id=task.id or 0, complete=True)
        return task
