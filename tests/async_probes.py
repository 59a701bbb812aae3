"""Deterministic probes for the asyncio guarantees: they count and wait on events, never on
the clock, so a loaded machine changes how long a test takes, not whether it passes.

- `cancelled_at` cancels a task at its n-th suspension: a sweep over n reaches every point
  a timeout could land on, in order, instead of hoping random timeouts do.
- `HeldReply` (a `LatencyProxy.hold_replies` gate) holds the reply to one flight at the
  proxy until the test has acted, so an event is known to happen while a statement is in
  flight.
- `LoopWitness` (another gate) relays a reply only once the event loop has run a callback
  scheduled when its request arrived: a round trip awaited synchronously on the loop can
  never complete, and is reported.
- `sleeps_on_the_loop` records `time.sleep` calls made on the loop's thread.
- `finished` waits for a task to end, bounded only against a hang;
  `nothing_left_to_the_garbage_collector` fails a test that leaked a connection.
- `connections_opened`, `checked_out` and `checked_in` are the only places that look
  inside a pool.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import types
import warnings
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import pool_stats
from tests.conftest import STUCK

T = TypeVar("T")


@contextmanager
def nothing_left_to_the_garbage_collector() -> Iterator[None]:
    """Fail if, inside, a connection is left to the garbage collector (it warns as it is
    dropped) or anything else warns. The warnings are caught, not raised from `__del__`, so
    nothing of a leak outlives the test to surface in a later one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for _ in range(3):  # what the first pass drops is collected by the next
                if not gc.collect():
                    break
    assert [str(w.message) for w in caught] == []


async def finished(task: asyncio.Task[Any]) -> None:
    """Wait for `task` to end, however it ends (see `task.cancelled()`); fail if it's stuck."""
    await asyncio.wait([task], timeout=STUCK)
    assert task.done(), "the task is stuck"


@types.coroutine
def cancelled_at(coro: Coroutine[Any, Any, T], suspension: int) -> Generator[Any, Any, T]:
    """Run `coro` in the current task, cancelling the task (`Task.cancel()`, exactly as a
    timeout does) as `coro` suspends for the `suspension`-th time. If `coro` finishes
    sooner, nothing is cancelled."""
    sent: Any = None
    thrown: BaseException | None = None
    suspended = 0
    while True:
        try:
            yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        suspended += 1
        if suspended == suspension:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        sent, thrown = None, None
        try:
            sent = yield yielded
        except BaseException as exc:  # handed on to `coro`, as the task would
            thrown = exc


class HeldReply:
    """A proxy gate holding back the reply to the `flight`-th client flight from now (on
    any connection) until `release()`."""

    def __init__(self, flight: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._flight = flight
        self._seen = 0
        self._arrived = asyncio.Event()
        self._released = threading.Event()

    def __call__(self) -> Callable[[bytes], None] | None:
        self._seen += 1
        if self._seen != self._flight:
            return None
        self._loop.call_soon_threadsafe(self._arrived.set)
        first = [True]

        def hold(_piece: bytes) -> None:
            if first[0]:
                first[0] = False
                self._released.wait(STUCK)

        return hold

    async def arrived(self) -> None:
        """Wait until the flight reached the proxy (the server has it; its reply is held)."""
        await self._arrived.wait()

    def release(self) -> None:
        """Let the held reply go on."""
        self._released.set()


class LoopWitness:
    """A proxy gate that relays each reply only after the event loop has run a callback
    scheduled when the request arrived. A client awaiting its reply lets the loop run, so
    that costs nothing; a round trip made synchronously on the loop's thread holds the loop,
    the callback can't run, and after `STUCK` seconds the reply goes on and the flight is
    counted in `blocked` (the gate then stops holding, so a broken run ends soon)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.flights = 0
        self.blocked = 0

    def __call__(self) -> Callable[[bytes], None] | None:
        if self.blocked:
            return None
        self.flights += 1
        ran = threading.Event()
        self._loop.call_soon_threadsafe(ran.set)

        def wait(_piece: bytes) -> None:
            # Called for each piece of the reply; only the first can wait.
            if not ran.is_set() and not self.blocked and not ran.wait(STUCK):
                self.blocked += 1

        return wait


@contextmanager
def sleeps_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Record the `time.sleep` calls made on the running loop's thread while inside."""
    loop_thread = threading.get_ident()
    calls: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.get_ident() == loop_thread:
            calls.append(seconds)
        real_sleep(seconds)

    with monkeypatch.context() as patch:
        patch.setattr(time, "sleep", sleep)
        yield calls


# The pool's own view. When the pool changes, re-point these three and nothing else.


def connections_opened(engine: AsyncEngine) -> Callable[[], int]:
    """A counter of the connections units of work on `engine` open from now on."""
    before = pool_stats(engine).opened
    return lambda: pool_stats(engine).opened - before


def checked_out(engine: AsyncEngine) -> int:
    """How many connections units of work on `engine` hold and have not given back."""
    return pool_stats(engine).lent


def checked_in(engine: AsyncEngine) -> int:
    """How many open connections the units of work's pool of `engine` holds, idle."""
    return pool_stats(engine).idle
