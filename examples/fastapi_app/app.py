"""The todo API: the same three routes with sync units of work (`/sync`, run on the
threadpool) and with async ones (`/async`, on the event loop).

    uvicorn examples.fastapi_app.app:app
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from examples.fastapi_app import errors
from examples.fastapi_app.dependencies import AsyncUnit, SyncUnit
from persistence import (
    LIST_LIMIT_MAX,
    Task,
    dispose_async_engine,
    dispose_engine,
    get_async_engine,
    init_db,
)


class NewTask(BaseModel):
    """A task to create. Only the types are checked here: the package validates the
    values (a `TaskValidationError` is answered 422), so there is one set of rules."""

    title: str
    description: str | None = None


class TaskOut(BaseModel):
    """A task as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str | None
    complete: bool
    created_at: datetime
    updated_at: datetime


def _out(task: Task) -> TaskOut:
    return TaskOut.model_validate(task)


Complete = Annotated[bool | None, Query(description="only complete (true) or open (false)")]
Limit = Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)]

sync_routes = APIRouter(prefix="/sync", tags=["sync"])
async_routes = APIRouter(prefix="/async", tags=["async"])


def _answer(payload: TaskOut | list[TaskOut], status: int = 200) -> JSONResponse:
    # A sync path operation's return value would be validated on the threadpool, while
    # its unit of work still holds a connection (and row locks): under load, every
    # threadpool thread can be waiting for those, and none left to validate. Answering a
    # ready `Response` skips that step, so the block ends (commits) straight away.
    if isinstance(payload, list):
        return JSONResponse([task.model_dump(mode="json") for task in payload], status)
    return JSONResponse(payload.model_dump(mode="json"), status)


@sync_routes.post("/users/{user_id}/tasks", status_code=201, response_model=TaskOut)
def create_task(user_id: str, new: NewTask, uow: SyncUnit) -> JSONResponse:
    """Create a task; 201 once it is committed."""
    task = uow.tasks.create(user_id=user_id, title=new.title, description=new.description)
    return _answer(_out(task), 201)


@sync_routes.get("/users/{user_id}/tasks", response_model=list[TaskOut])
def list_tasks(
    user_id: str, uow: SyncUnit, complete: Complete = None, limit: Limit = 50
) -> JSONResponse:
    """The user's tasks, newest first."""
    tasks = uow.tasks.list(user_id=user_id, complete=complete, limit=limit)
    return _answer([_out(t) for t in tasks])


@sync_routes.post("/users/{user_id}/tasks/{task_id}/toggle", response_model=TaskOut)
def toggle_task(user_id: str, task_id: int, uow: SyncUnit) -> JSONResponse:
    """Flip a task's `complete`; 404 if the user has no such task."""
    return _answer(_out(uow.tasks.toggle_complete(user_id=user_id, task_id=task_id)))


@async_routes.post("/users/{user_id}/tasks", status_code=201)
async def create_task_async(user_id: str, new: NewTask, uow: AsyncUnit) -> TaskOut:
    """Create a task; 201 once it is committed."""
    task = await uow.tasks.create(user_id=user_id, title=new.title, description=new.description)
    return _out(task)


@async_routes.get("/users/{user_id}/tasks")
async def list_tasks_async(
    user_id: str, uow: AsyncUnit, complete: Complete = None, limit: Limit = 50
) -> list[TaskOut]:
    """The user's tasks, newest first."""
    tasks = await uow.tasks.list(user_id=user_id, complete=complete, limit=limit)
    return [_out(t) for t in tasks]


@async_routes.post("/users/{user_id}/tasks/{task_id}/toggle")
async def toggle_task_async(user_id: str, task_id: int, uow: AsyncUnit) -> TaskOut:
    """Flip a task's `complete`; 404 if the user has no such task."""
    return _out(await uow.tasks.toggle_complete(user_id=user_id, task_id=task_id))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Blocking set-up off the loop: settings, the embedded server if no DATABASE_URL, DDL.
    await asyncio.to_thread(init_db)
    app.state.async_engine = await get_async_engine()  # this loop's default engine
    try:
        yield
    finally:
        await dispose_async_engine()
        await asyncio.to_thread(dispose_engine)


def create_app() -> FastAPI:
    """A fresh application: routes, error handlers, and the engines' life cycle."""
    app = FastAPI(title="todo on persistence", lifespan=lifespan)
    app.include_router(sync_routes)
    app.include_router(async_routes)
    errors.install(app)
    return app


app = create_app()
