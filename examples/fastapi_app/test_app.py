"""The example app on a real uvicorn server (its own thread, a free port) and a real
PostgreSQL (the plugin's throwaway database): concurrent requests leave no transaction
and no connection behind, and a COMMIT that fails is never answered 2xx."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text

from examples.fastapi_app.app import create_app
from persistence import get_engine, pool_stats
from persistence.testing import TestDatabase

if TYPE_CHECKING:  # `pool_stats` returns it; the package does not export the name
    from persistence.pool import PoolStats

FLAVOURS = ["sync", "async"]

# Titles the deferred trigger below acts on, at COMMIT only (the INSERT itself succeeds).
REFUSED_AT_COMMIT = "refused at commit"
KILLED_AT_COMMIT = "connection killed at commit"
TRIGGER_MESSAGE = "example trigger: this transaction may not commit"


class _Server(uvicorn.Server):
    """A uvicorn server that says when it has started (or failed to)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@dataclass
class Running:
    """The app being served, and where."""

    app: FastAPI
    url: str
    database: TestDatabase

    def pool(self, flavour: str) -> PoolStats:
        """The counts of the pool the flavour's units of work draw from, in the server."""
        engine = get_engine() if flavour == "sync" else self.app.state.async_engine
        return pool_stats(engine)

    def open_transactions(self) -> int:
        """Sessions on the test database left idle inside a transaction."""
        with self.database.engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :name"
                    " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                ),
                {"name": self.database.name},
            ).scalar_one()
        return int(found)


@pytest.fixture(scope="module")
def server(persistence_database: TestDatabase) -> Iterator[Running]:
    app = create_app()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", backlog=512)
    served = _Server(config)
    thread = threading.Thread(target=served.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        assert served.ready.wait(120), "uvicorn did not start"
        assert served.started, "uvicorn failed to start (see its log above)"
        yield Running(app=app, url=f"http://127.0.0.1:{port}", database=persistence_database)
    finally:
        served.should_exit = True
        thread.join(120)
        listener.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def commit_trigger(persistence_database: TestDatabase) -> Iterator[None]:
    """A deferred constraint trigger on `tasks` that fails the COMMIT of a transaction that
    inserted a task titled REFUSED_AT_COMMIT, and terminates the backend itself during the
    COMMIT of one that inserted KILLED_AT_COMMIT: the server really refuses, or really
    loses, the COMMIT, after every statement of the request has succeeded."""
    with persistence_database.engine.begin() as connection:
        connection.execute(
            text(
                f"""
                CREATE FUNCTION example_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.title = '{REFUSED_AT_COMMIT}' THEN
                        RAISE EXCEPTION '{TRIGGER_MESSAGE}';
                    ELSIF NEW.title = '{KILLED_AT_COMMIT}' THEN
                        PERFORM pg_terminate_backend(pg_backend_pid());
                    END IF;
                    RETURN NULL;
                END $$
                """
            )
        )
        connection.execute(
            text(
                "CREATE CONSTRAINT TRIGGER example_at_commit AFTER INSERT ON tasks"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                " EXECUTE FUNCTION example_at_commit()"
            )
        )
    try:
        yield
    finally:
        with persistence_database.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER example_at_commit ON tasks"))
            connection.execute(text("DROP FUNCTION example_at_commit()"))


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def _tasks(server: Running, flavour: str, user_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/{flavour}/users/{user_id}/tasks", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def _assert_nothing_left_behind(server: Running, flavour: str) -> None:
    assert server.open_transactions() == 0
    stats = server.pool(flavour)
    assert stats.lent == 0, stats
    assert stats.waiting == 0, stats


async def _send_all(base: str, calls: list[tuple[str, dict[str, Any] | None]]) -> list[Any]:
    """POST every (path, body) at once, each on its own connection; the answers in order."""
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in calls))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_200_concurrent_toggles_and_creates_all_answer_and_leave_nothing_open(
    server: Running, flavour: str
) -> None:
    user_id = _user()
    base = f"/{flavour}/users/{user_id}/tasks"
    seeded = [
        httpx.post(f"{server.url}{base}", json={"title": f"seed {n}"}).json()["id"]
        for n in range(4)
    ]
    calls: list[tuple[str, dict[str, Any] | None]] = [
        (f"{base}/{seeded[n % 4]}/toggle", None) for n in range(150)
    ]
    calls += [(base, {"title": f"new {n}"}) for n in range(50)]
    random.Random(11).shuffle(calls)

    answers = asyncio.run(_send_all(server.url, calls))

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {200: 150, 201: 50}, [a.text for a in answers if a.status_code >= 300]
    _assert_nothing_left_behind(server, flavour)
    # Toggles of one task serialize on its row: they answer True, False, True, ... in
    # some order, so no toggle was lost or applied twice iff the counts split this way.
    toggles = Counter(path for path, body in calls if body is None)
    answered_true = Counter(
        path
        for (path, body), answer in zip(calls, answers, strict=True)
        if body is None and answer.json()["complete"]
    )
    stored = {task["id"]: task for task in _tasks(server, flavour, user_id)}
    assert len(stored) == 4 + 50
    for task_id in seeded:
        path = f"{base}/{task_id}/toggle"
        assert answered_true[path] == math.ceil(toggles[path] / 2)
        assert stored[task_id]["complete"] is (toggles[path] % 2 == 1)
    assert sorted(t["title"] for t in stored.values() if t["title"].startswith("new ")) == sorted(
        f"new {n}" for n in range(50)
    )


@pytest.mark.usefixtures("commit_trigger")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_commit_the_server_refuses_is_answered_500_and_saves_nothing(
    server: Running, flavour: str
) -> None:
    user_id = _user()
    answer = httpx.post(
        f"{server.url}/{flavour}/users/{user_id}/tasks", json={"title": REFUSED_AT_COMMIT}
    )

    assert answer.status_code == 500
    assert answer.json() == {"detail": "the database refused the request: nothing was saved"}
    assert TRIGGER_MESSAGE not in answer.text
    assert _tasks(server, flavour, user_id) == []
    _assert_nothing_left_behind(server, flavour)


@pytest.mark.usefixtures("commit_trigger")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_connection_lost_during_commit_is_answered_503_and_saves_nothing(
    server: Running, flavour: str
) -> None:
    user_id = _user()
    answer = httpx.post(
        f"{server.url}/{flavour}/users/{user_id}/tasks", json={"title": KILLED_AT_COMMIT}
    )

    # The unit of work asked the server how the cut COMMIT ended: rolled back.
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the database is unavailable: nothing was saved"}
    assert "terminating connection" not in answer.text
    assert _tasks(server, flavour, user_id) == []
    _assert_nothing_left_behind(server, flavour)
    # The pool replaced the dead connection: the next request works.
    again = httpx.post(f"{server.url}/{flavour}/users/{user_id}/tasks", json={"title": "next"})
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_missing_tasks_are_404_and_invalid_input_is_422(server: Running, flavour: str) -> None:
    alice, bob = _user(), _user()
    base = f"{server.url}/{flavour}/users"
    alices = httpx.post(f"{base}/{alice}/tasks", json={"title": "Buy milk"}).json()["id"]

    missing = httpx.post(f"{base}/{alice}/tasks/{alices + 1_000_000}/toggle")
    not_bobs = httpx.post(f"{base}/{bob}/tasks/{alices}/toggle")
    blank = httpx.post(f"{base}/{alice}/tasks", json={"title": "   "})

    assert (missing.status_code, missing.json()) == (404, {"detail": "task not found"})
    assert (not_bobs.status_code, not_bobs.json()) == (404, {"detail": "task not found"})
    assert blank.status_code == 422
    assert blank.json()["field"] == "title"
    assert [t["complete"] for t in _tasks(server, flavour, alice)] == [False]
    _assert_nothing_left_behind(server, flavour)
