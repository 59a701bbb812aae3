"""User-scoped task persistence on PostgreSQL (Neon) behind a Unit of Work.

    from persistence import UnitOfWork, init_db

    init_db()
    with UnitOfWork() as uow:
        task = uow.tasks.create(user_id="alice", title="Buy milk")

Nothing connects, reads settings or builds an engine at import time.
"""

from __future__ import annotations

import logging

from persistence.async_database import create_async_engine, dispose_async_engine, get_async_engine
from persistence.async_transactions import run_in_transaction_async
from persistence.async_unit_of_work import AsyncTaskRepository, AsyncUnitOfWork
from persistence.config import Settings, load_settings
from persistence.database import create_engine, dispose_engine, get_engine, init_db
from persistence.errors import (
    AuthenticationError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConnectionLostError,
    DatabaseError,
    DatabaseUnavailableError,
    IntegrityViolationError,
    PersistenceError,
    PoolTimeoutError,
    TaskNotFoundError,
    TaskValidationError,
    TransactionConflictError,
)
from persistence.extras import DISTRIBUTION, MissingExtraError
from persistence.fake import AsyncFakeUnitOfWork, FakeDatabase, FakeUnitOfWork
from persistence.models import Task
from persistence.repository import UNSET, TaskRepository
from persistence.transactions import run_in_transaction
from persistence.unit_of_work import UnitOfWork

__all__ = [
    "DISTRIBUTION",
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
    "FakeDatabase",
    "FakeUnitOfWork",
    "IntegrityViolationError",
    "MissingExtraError",
    "PersistenceError",
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
    "run_in_transaction",
    "run_in_transaction_async",
]

__version__ = "0.1.0"

# A library logs, but leaves handlers to the application.
logging.getLogger(__name__).addHandler(logging.NullHandler())
