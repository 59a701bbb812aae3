"""The package's errors as HTTP answers: a status and a message that never carries a
driver's text or a password (the details go to the server's log)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from persistence import (
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    IntegrityViolationError,
    PersistenceError,
    TaskNotFoundError,
    TaskValidationError,
    TransactionConflictError,
)

logger = logging.getLogger("examples.fastapi_app")

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _answer(status: int, detail: str, *, retry: bool = False) -> JSONResponse:
    headers = {"Retry-After": "1"} if retry else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaskValidationError)
    # The message names the field and the rule, and echoes only the caller's own input.
    return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=422)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _answer(404, "task not found")


async def _outcome_unknown(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: commit outcome unknown: %s", request.method, request.url.path, exc)
    return _answer(503, "the database was lost while saving: check before trying again")


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return _answer(503, "the database is unavailable: nothing was saved", retry=True)


async def _deadline(request: Request, exc: Exception) -> Response:
    logger.warning("%s %s: deadline exceeded: %s", request.method, request.url.path, exc)
    return _answer(503, "the database is busy: nothing was saved", retry=True)


async def _conflict(request: Request, exc: Exception) -> Response:
    logger.info("%s %s: conflict: %s", request.method, request.url.path, exc)
    return _answer(409, "the request conflicted with another one: nothing was saved")


async def _failed(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: database error: %s", request.method, request.url.path, exc)
    return _answer(500, "the database refused the request: nothing was saved")


# Starlette picks the handler of the nearest class in the exception's MRO.
HANDLERS: dict[type[Exception], Handler] = {
    TaskValidationError: _invalid,
    TaskNotFoundError: _not_found,
    CommitOutcomeUnknownError: _outcome_unknown,
    DatabaseUnavailableError: _unavailable,
    DeadlineExceededError: _deadline,
    TransactionConflictError: _conflict,
    IntegrityViolationError: _conflict,
    PersistenceError: _failed,
}


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    for error, handler in HANDLERS.items():
        app.add_exception_handler(error, handler)
