"""User-scoped task persistence on PostgreSQL (Neon) behind a Unit of Work.

    from persistence import UnitOfWork, init_db

    init_db()
    with UnitOfWork() as uow:
        task = uow.tasks.create(user_id="alice", title="Buy milk")

Nothing connects, reads settings or builds an engine at import time, and importing the
package imports none of its parts: each public name is imported when first used, so a
sync application never loads the asyncio side.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistence.async_database import (
        create_async_engine,
        dispose_async_engine,
        get_async_engine,
    )
    from persistence.async_repository import AsyncTaskRepository
    from persistence.async_transactions import run_in_transaction_async
    from persistence.async_unit_of_work import AsyncUnitOfWork
    from persistence.causal import LastWrites
    from persistence.config import Settings, load_settings
    from persistence.connections import pool_stats
    from persistence.database import create_engine, dispose_engine, get_engine, init_db
    from persistence.errors import (
        AuthenticationError,
        CommitOutcomeUnknownError,
        ConfigurationError,
        ConnectionLostError,
        DatabaseError,
        DatabaseUnavailableError,
        DeadlineExceededError,
        IntegrityViolationError,
        PersistenceError,
        PoolTimeoutError,
        TaskNotFoundError,
        TaskValidationError,
        TransactionConflictError,
    )
    from persistence.extras import DISTRIBUTION, MissingExtraError
    from persistence.fake import AsyncFakeUnitOfWork, FakeDatabase, FakeUnitOfWork
    from persistence.models import LIST_LIMIT_MAX, Task
    from persistence.pool import PoolStats
    from persistence.repository import UNSET, TaskRepository
    from persistence.transactions import run_in_transaction
    from persistence.unit_of_work import UnitOfWork

# Where each public name lives: `from persistence import X` imports only X's module.
_HOMES = {
    "create_async_engine": "async_database",
    "dispose_async_engine": "async_database",
    "get_async_engine": "async_database",
    "run_in_transaction_async": "async_transactions",
    "AsyncTaskRepository": "async_repository",
    "AsyncUnitOfWork": "async_unit_of_work",
    "LastWrites": "causal",
    "Settings": "config",
    "load_settings": "config",
    "pool_stats": "connections",
    "PoolStats": "pool",
    "create_engine": "database",
    "dispose_engine": "database",
    "get_engine": "database",
    "init_db": "database",
    "AuthenticationError": "errors",
    "CommitOutcomeUnknownError": "errors",
    "ConfigurationError": "errors",
    "ConnectionLostError": "errors",
    "DatabaseError": "errors",
    "DatabaseUnavailableError": "errors",
    "DeadlineExceededError": "errors",
    "IntegrityViolationError": "errors",
    "PersistenceError": "errors",
    "PoolTimeoutError": "errors",
    "TaskNotFoundError": "errors",
    "TaskValidationError": "errors",
    "TransactionConflictError": "errors",
    "DISTRIBUTION": "extras",
    "MissingExtraError": "extras",
    "AsyncFakeUnitOfWork": "fake",
    "FakeDatabase": "fake",
    "FakeUnitOfWork": "fake",
    "LIST_LIMIT_MAX": "models",
    "Task": "models",
    "UNSET": "repository",
    "TaskRepository": "repository",
    "run_in_transaction": "transactions",
    "UnitOfWork": "unit_of_work",
}

__all__ = [
    "DISTRIBUTION",
    "LIST_LIMIT_MAX",
    "UNSET",
    "AsyncFakeUnitOfWork",
    "AsyncTaskRepository",
    "AsyncUnitOfWork",
    "AuthenticationError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConnectionLostError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DeadlineExceededError",
    "FakeDatabase",
    "FakeUnitOfWork",
    "IntegrityViolationError",
    "LastWrites",
    "MissingExtraError",
    "PersistenceError",
    "PoolStats",
    "PoolTimeoutError",
    "Settings",
    "Task",
    "TaskNotFoundError",
    "TaskRepository",
    "TaskValidationError",
    "TransactionConflictError",
    "UnitOfWork",
    "create_async_engine",
    "create_engine",
    "dispose_async_engine",
    "dispose_engine",
    "get_async_engine",
    "get_engine",
    "init_db",
    "load_settings",
    "pool_stats",
    "run_in_transaction",
    "run_in_transaction_async",
]

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


# A library logs, but leaves handlers to the application.
logging.getLogger(__name__).addHandler(logging.NullHandler())
