"""What `UnitOfWork` and `AsyncUnitOfWork` share: their state, their rules, and every step.

Each step is a generator that decides what to send and what the answer means, and
yields the I/O it needs as a request (`Execute`, `Reconnect`, ...). `UnitOfWork` performs
the requests on a psycopg connection; `AsyncUnitOfWork` awaits them on an async one. So
when a transaction begins, what rides in one pipeline, when a failed first statement is
sent again, how a lost COMMIT is resolved, and how a savepoint ends are decided here,
once, and the two can't drift.

The transaction is begun lazily: reads before the first write run in autocommit (under
READ COMMITTED each statement takes a fresh snapshot anyway), and the first write
carries BEGIN, and the transaction's set-up, in its own pipeline: BEGIN + the write cost
one round trip, COMMIT another. With REPEATABLE READ or SERIALIZABLE the first statement
of any kind begins it, so that every read shares the snapshot.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, NoReturn, TypeVar

import psycopg

from persistence import statements
from persistence.causal import position
from persistence.connections import Database
from persistence.errors import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseError,
    DatabaseUnavailableError,
    PersistenceError,
    PoolTimeoutError,
    is_disconnect,
    translate,
)
from persistence.models import (
    ISOLATION_LEVELS,
    check_after_token,
    check_flag,
    check_isolation_level,
    check_timeout,
)
from persistence.operations import Operation
from persistence.rows import TaskRows
from persistence.statements import Statement

__all__ = [
    "ISOLATION_LEVELS",
    "Batch",
    "Deadlines",
    "Execute",
    "Release",
    "Request",
    "Reroute",
    "Resolve",
    "Steps",
    "UnitOfWorkBase",
    "default_binds",
    "in_transaction",
    "inside_a_savepoint",
    "multi_statement",
    "with_session_setup",
]

default_binds: dict[str, Any] = {"sync": None, "async": None}
"""What `UnitOfWork()` / `AsyncUnitOfWork()` with no `bind` use instead of the default
engine. Set only by the test kit (`persistence.testing`), so that code under test that
builds its own unit of work joins the test's connection and its rolled-back transaction."""

logger = logging.getLogger("persistence.unit_of_work")

T = TypeVar("T")

Batch = tuple[tuple[str, tuple[Any, ...], TaskRows | None], ...]
"""Statements sent in one pipeline: SQL, parameters, and how to build rows (or `None`)."""


# The requests are named tuples: one is made for every statement sent (cheap to build).


class Execute(NamedTuple):
    """Send `batch` (one round trip) on the unit's connection, opening one first if it has
    none; answer with each statement's rows (`None`: it returns none)."""

    batch: Batch


class Reconnect(NamedTuple):
    """The connection is dead: close it, mark the pool's connections suspect, and take a
    fresh one."""


class Release(NamedTuple):
    """Give the connection back (the pool closes it if it is broken)."""


class Resolve(NamedTuple):
    """After `delay` seconds, ask on a new connection of its own how transaction `xid`
    ended; answer with (`"committed"`, `"aborted"` or `"in progress"`, the primary's WAL
    position then), or `None` if it can't be asked."""

    xid: str
    delay: float


class Reroute(NamedTuple):
    """The replica can't serve this unit of work (down, lagging, or behind its causal
    token): give its connection back, and take one from the primary instead; `aside` says
    whether to leave the replica aside for a while ("down", "lagging") or not (`None`: it
    is only behind this unit's token)."""

    reason: str
    aside: str | None


Request = Execute | Reconnect | Release | Resolve | Reroute
Steps = Generator[Request, Any, T]

_BEGIN, _IN_TRANSACTION = "begin", "in transaction"

# How long to keep asking about a COMMIT cut in flight while the server still has it
# "in progress" (its backend has not yet noticed the lost client), in seconds.
RESOLVE_ATTEMPTS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The server-side bounds a unit of work sets on its transaction, in milliseconds."""

    statement: int | None = None
    """`statement_timeout` and `lock_timeout`: the unit of work's `timeout`."""
    idle_in_transaction: int | None = None
    """`idle_in_transaction_session_timeout`: how long a transaction may sit idle."""

    def settings(self, *, in_transaction: bool) -> tuple[tuple[str, int], ...]:
        """The `SET LOCAL`s to send, (name, milliseconds) (none when nothing is bounded)."""
        found: tuple[tuple[str, int], ...] = ()
        if in_transaction and self.idle_in_transaction is not None:
            found += (("idle_in_transaction_session_timeout", self.idle_in_transaction),)
        if self.statement is not None:
            found += (("lock_timeout", self.statement), ("statement_timeout", self.statement))
        return found


def _setup(
    settings: tuple[tuple[str, int], ...], *, xid: bool
) -> tuple[str, tuple[Any, ...], None]:
    statement = statements.transaction_setup(xid=xid, settings=settings)
    return statement.sql, (), None


def _plain(statement: Statement) -> tuple[str, tuple[Any, ...], None]:
    return statement.sql, statement.args({}), None


class UnitOfWorkBase:
    """The state of a unit of work and the steps it takes; no I/O of its own."""

    _block: ClassVar[str]
    """How the unit of work is entered, for error messages."""

    def __init__(
        self,
        *,
        isolation_level: str | None,
        read_only: bool,
        timeout: float | None = None,
        after: str | None = None,
    ) -> None:
        self._isolation_level = check_isolation_level(isolation_level)
        self._read_only = bool(check_flag("read_only", read_only, optional=False))
        self._timeout = check_timeout(timeout)
        self._after = check_after_token(after)
        self._active = False
        self._joined = False
        self._deadlines = Deadlines()
        self._reset_transaction()
        self._savepoints: list[str] = []
        self._lost: PersistenceError | None = None
        self._causal_token: str | None = None
        self._replica_check: tuple[str | None, float] | None = None
        self._database: Any = None  # set when started on an engine's pools

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"<{type(self).__name__} {state} isolation_level={self._isolation_level!r}>"

    @property
    def causal_token(self) -> str | None:
        """Where the primary's WAL stood after this unit of work's last commit that wrote
        something (`"16/B374D848"`), or `None` if it committed no write.

        Give it to a later read-only unit of work, `UnitOfWork(read_only=True,
        after=token)`, even in another process or request (it is a plain string, fit for
        a cookie or a header): that one reads from a replica only if the replica has
        replayed at least this far, else from the primary, so it never misses this write.
        """
        return self._causal_token

    # --- state ------------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self._state: str | None = None  # None, _BEGIN (being begun) or _IN_TRANSACTION
        self._began = False  # a statement was sent since the last commit or rollback
        self._wrote = False  # a write was sent in the current transaction
        self._xid: str | None = None
        # An operation was interrupted half-way (a cancelled task, KeyboardInterrupt):
        # what reached the server is unknown, even whether its BEGIN did. The number of
        # savepoints open then: rolling back to one of them undoes it.
        self._interrupted: int | None = None

    def _start(self, *, joined: bool, deadlines: Deadlines) -> None:
        if self._active:
            raise PersistenceError(
                f"this unit of work is already active; use a new {type(self).__name__}"
            )
        self._active = True
        self._joined = joined
        # Joined to the caller's transaction, whose settings are the caller's own.
        self._deadlines = Deadlines() if joined else deadlines
        self._reset_transaction()
        self._savepoints = []
        self._lost = None
        self._causal_token = None
        self._replica_check = None

    def _start_on(self, database: Database[Any]) -> None:
        """Start on one of `database`'s pools: a replica's for a read-only unit of work (a
        standby can't run SERIALIZABLE: those read from the primary), else the primary's.
        On a replica, the unit's first statement checks, in the same round trip, that the
        replica is within the lag bound and has replayed the caller's causal token."""
        settings = database.settings
        timeout = self._timeout if self._timeout is not None else settings.timeout
        self._start(
            joined=False, deadlines=deadlines(timeout, settings.idle_in_transaction_timeout)
        )
        self._database = database
        on_replica = self._read_only and self._isolation_level != "SERIALIZABLE"
        after = position(self._after) if self._after else 0
        self._pool, self._replica = database.pool_for(on_replica, after)
        if self._replica is not None:
            self._replica_check = (self._after, settings.read_max_lag)

    def _stop(self) -> None:
        self._active = False
        self._reset_transaction()
        self._savepoints = []

    def _check_active(self) -> None:
        if not self._active:
            raise PersistenceError(
                "this unit of work is not active: use uow.tasks, commit(), rollback() and "
                f"savepoint() inside `{self._block}`"
            )

    def _not_in_a_savepoint(self, action: str) -> None:
        if self._savepoints:
            raise inside_a_savepoint(action)

    @property
    def _snapshot(self) -> bool:
        return self._isolation_level in {"REPEATABLE READ", "SERIALIZABLE"}

    def _begin_sql(self) -> str:
        if self._joined:
            # Joined to a caller's transaction (the test kit): ours is a savepoint in it.
            return "SAVEPOINT persistence_unit_of_work"
        begin = "BEGIN"
        if self._isolation_level is not None:
            begin += f" ISOLATION LEVEL {self._isolation_level}"
        if self._read_only:
            begin += " READ ONLY"
        return begin

    def _commit_sql(self) -> str:
        return "RELEASE SAVEPOINT persistence_unit_of_work" if self._joined else "COMMIT"

    def _rollback_batch(self) -> Batch:
        if self._joined:
            return (
                ("ROLLBACK TO SAVEPOINT persistence_unit_of_work", (), None),
                ("RELEASE SAVEPOINT persistence_unit_of_work", (), None),
            )
        return (("ROLLBACK", (), None),)

    # --- the steps ----------------------------------------------------------------------

    def _run_steps(self, operation: Operation[T], aborted: bool) -> Steps[T]:
        """Send one operation's statement, beginning the transaction if it must."""
        if operation.statement is None:
            return operation.read(None)
        self._usable(operation.action, aborted)
        statement = (operation.statement.sql, operation.args, operation.rows)
        batch, setup_at = self._with_transaction(statement, writes=operation.writes)
        results = yield from self._send(operation.action, batch)
        if setup_at is not None and operation.writes and not self._joined:
            self._xid = results[setup_at][0][0]
        self._wrote = self._wrote or operation.writes
        return operation.read(results[-1])

    def _with_transaction(
        self, statement: tuple[str, tuple[Any, ...], TaskRows | None], *, writes: bool
    ) -> tuple[Batch, int | None]:
        """`statement` with what must ride in front of it: BEGIN and the transaction's
        set-up when it begins one, the capture of the transaction's id when it is the
        first write, the deadline before a read outside a transaction."""
        settings = self._deadlines.settings(in_transaction=True)
        if self._state is None and (writes or self._snapshot):
            self._state = _BEGIN
            # Read-only: a write is refused anyway (and a standby can't give an id).
            wants_xid = writes and not self._joined and not self._read_only
            if self._joined or not (settings or wants_xid):
                return ((self._begin_sql(), (), None), statement), None
            return ((self._begin_sql(), (), None), _setup(settings, xid=wants_xid), statement), 1
        first_write = writes and self._xid is None and self._state is not None
        if first_write and not self._joined and not self._read_only:
            return (_setup((), xid=True), statement), 0
        if self._state is None and self._deadlines.statement is not None:
            # Outside a transaction: `SET LOCAL` in the same pipeline lasts for the
            # implicit transaction the read runs in, and ends with it.
            reads = self._deadlines.settings(in_transaction=False)
            return (_setup(reads, xid=False), statement), None
        return (statement,), None

    def _usable(self, action: str, aborted: bool) -> None:
        if self._interrupted is not None:
            raise _interrupted_error(action, "roll back first (or leave the block)")
        if self._lost is not None:
            raise ConnectionLostError(
                f"{action}: the database connection was lost earlier in this unit of work; "
                "nothing since the last commit was committed"
            ) from self._lost
        if aborted:
            raise _aborted_error(action, "roll back first (or leave the block)")

    def _send(self, action: str, batch: Batch) -> Steps[list[Any]]:
        """Send `batch`. A dead pooled connection found by the unit's first statement is
        replaced and the batch sent again (nothing was lost: nothing had begun); a replica
        that can't serve the unit's first statement hands it over to the primary."""
        began, state = self._began, self._state
        check, self._replica_check = self._replica_check, None
        sent, at = batch, 0
        if check is not None:
            # After a BEGIN (isolation levels must come before any query), else first.
            at = 1 if batch[0][0].startswith("BEGIN") else 0
            sent = (*batch[:at], _replica_status(check[0]), *batch[at:])
        try:
            results: list[Any] = yield Execute(sent)
        except Exception as exc:
            error = translate(exc, action)
            if check is not None and isinstance(error, DatabaseUnavailableError):
                # A replica whose pool is only busy is up: read elsewhere this once, but
                # don't leave it aside (and close its good connections) for that.
                busy = isinstance(error, PoolTimeoutError)
                aside = None if busy else "down"
                results = yield from self._on_the_primary(action, batch, error, state, aside)
            elif began or not is_disconnect(exc) or self._joined:
                self._fail(error, state)
                _raise(error, exc)
            else:
                logger.info("the pooled connection was dead; %s again on a new one", action)
                results = yield from self._again(action, batch, Reconnect(), state)
        except BaseException:
            self._interrupt()
            raise
        else:
            if check is not None:
                status = results[at][0]
                unreplayed = 0.0
                if self._replica is not None and status[3] is not None:
                    replayed = position(status[3])
                    self._replica.saw(replayed)
                    unreplayed = self._database.unreplayed_for(replayed)
                behind = _replica_behind(status, check[1], unreplayed)
                if behind is None:
                    results = results[:at] + results[at + 1 :]
                else:
                    switch = Reroute(*behind)
                    results = yield from self._again(action, batch, switch, state)
        self._began = True
        if self._state == _BEGIN:
            self._state = _IN_TRANSACTION
        return results

    def _on_the_primary(
        self,
        action: str,
        batch: Batch,
        error: PersistenceError,
        state: str | None,
        aside: str | None,
    ) -> Steps[list[Any]]:
        logger.warning("a read replica can't be used (%s); reading from the primary", error)
        return (yield from self._again(action, batch, Reroute(str(error), aside), state))

    def _again(
        self, action: str, batch: Batch, switch: Request, state: str | None
    ) -> Steps[list[Any]]:
        try:
            yield switch
            results: list[Any] = yield Execute(batch)
        except Exception as again:
            error = translate(again, action)
            self._fail(error, state)
            _raise(error, again)
        except BaseException:
            self._interrupt()
            raise
        return results

    def _interrupt(self) -> None:
        # What was sent is unknown: the unit refuses every operation and the commit until
        # it is rolled back, or a savepoint open before it is (the end of the block after
        # an exception rolls back anyway).
        # Believing a BEGIN sent that never left would let later writes autocommit.
        self._began = True
        depth = len(self._savepoints)
        self._interrupted = depth if self._interrupted is None else min(self._interrupted, depth)

    def _fail(self, error: PersistenceError, state: str | None) -> None:
        if isinstance(error, DatabaseUnavailableError) and not isinstance(
            error, ConnectionLostError
        ):
            # No connection was to be had (refused, unreachable, the pool busy): nothing
            # was sent. A BEGIN believed sent would let the next writes run outside any
            # transaction (in autocommit); instead the next statement begins afresh.
            if self._state == _BEGIN:
                self._state = None
            return
        if isinstance(error, ConnectionLostError) or is_disconnect(error.__cause__ or error):
            self._lost = error
        if self._state == _BEGIN:
            # BEGIN went out with the failed statement: the transaction is open (aborted),
            # unless the connection is gone.
            self._state = _IN_TRANSACTION if self._lost is None else state
        self._began = True

    def _commit_steps(self, aborted: bool) -> Steps[None]:
        """COMMIT (with the causal token in the same pipeline); a COMMIT cut in flight is
        resolved by asking the server how the transaction ended."""
        self._not_in_a_savepoint("commit()")
        if self._lost is not None:
            lost = self._lost
            self._reset_transaction()
            raise ConnectionLostError(
                "committing: the database connection was lost earlier in this unit of "
                "work: nothing since the last commit was committed"
            ) from lost
        if self._interrupted is not None:
            yield from self._rollback_quietly()
            raise _interrupted_error("committing", "nothing since the last commit was committed")
        state, wrote, xid = self._state, self._wrote, self._xid
        self._reset_transaction()
        if state is None:
            return  # nothing began: nothing to commit (and no round trip)
        if aborted:
            # The server answers COMMIT on an aborted transaction with a ROLLBACK that
            # psycopg does not report: say so instead of letting it pass for a commit.
            yield from self._rollback_quietly()
            raise _aborted_error("committing", "nothing since the last commit was committed")
        batch: Batch = ((self._commit_sql(), (), None),)
        token_wanted = wrote and not self._joined
        if token_wanted:
            batch += (_plain(statements.causal_position()),)
        try:
            results = yield Execute(batch)
        except Exception as exc:
            error = translate(exc, "committing")
            if not (wrote and isinstance(error, ConnectionLostError) and not self._joined):
                if isinstance(error, ConnectionLostError):
                    self._lost = error
                _raise(error, exc)
            # Not raised (yet): chained by hand, so that whatever is raised for it, now
            # or by a later operation, carries the driver's error.
            error.__cause__ = exc
            self._lost = error
            token = yield from self._resolve_steps(xid, error)
            # Committed: the block goes on, on a new connection (the dead one is given
            # back, and the pool closes it).
            self._lost = None
            yield Release()
            self._committed(token)
            return
        if token_wanted:
            self._committed(results[1][0][0])
        logger.debug("unit of work committed")

    def _committed(self, token: str) -> None:
        self._causal_token = token
        if self._database.replicas:  # what a replica has missed matters only with replicas
            self._database.committed(position(token))

    def _resolve_steps(self, xid: str | None, lost: ConnectionLostError) -> Steps[str]:
        """The connection died while COMMIT was in flight: ask a new connection how the
        transaction ended. Committed: the primary's WAL position, past the commit (the
        causal token). Aborted: nothing was saved (`ConnectionLostError`, safe to run
        again). Otherwise: `CommitOutcomeUnknownError`."""
        answer: tuple[str, str] | None = None
        if xid is not None:
            for delay in RESOLVE_ATTEMPTS:
                answer = yield Resolve(xid, delay)
                if answer is None or answer[0] != "in progress":
                    break
        outcome = None if answer is None else answer[0]
        if answer is not None and outcome == "committed":
            logger.warning(
                "the connection was lost while COMMIT was in flight; the server says "
                "transaction %s committed",
                xid,
            )
            return answer[1]
        if outcome == "aborted":
            raise ConnectionLostError(
                "the connection was lost while COMMIT was in flight, and the server says "
                "the transaction was rolled back: nothing was saved"
            ) from lost.__cause__
        raise CommitOutcomeUnknownError(
            "the connection was lost while COMMIT was in flight: the work may or may not "
            "have been committed (the server could not say); check before doing it again"
        ) from lost.__cause__

    def _rollback_steps(self) -> Steps[None]:
        """ROLLBACK what was done since the last commit (explicit: errors are raised)."""
        self._not_in_a_savepoint("rollback()")
        state, lost = self._state, self._lost
        self._reset_transaction()
        self._lost = None
        if state is None or lost is not None:
            return  # nothing begun, or the server discarded it with the connection
        try:
            yield Execute(self._rollback_batch())
        except Exception as exc:
            error = translate(exc, "rolling back")
            if isinstance(error, ConnectionLostError):
                return  # the server discards the work with the connection
            _raise(error, exc)

    def _rollback_quietly(self) -> Steps[None]:
        # The caller's exception is what matters; a failed rollback (say, on a dead
        # connection) is logged, not raised over it. The server discards the work anyway.
        state, lost = self._state, self._lost
        self._reset_transaction()
        if state is None or lost is not None:
            return
        try:
            yield Execute(self._rollback_batch())
            logger.debug("unit of work rolled back")
        except Exception:
            logger.warning("rollback failed; the connection is discarded", exc_info=True)

    def _open_savepoint_steps(self) -> Steps[str]:
        """SAVEPOINT (beginning the transaction first if it must: in one pipeline)."""
        self._usable("opening a savepoint", aborted=False)
        name = f"persistence_savepoint_{len(self._savepoints) + 1}"
        statement = (f"SAVEPOINT {name}", (), None)
        if self._state is None:
            self._state = _BEGIN
            settings = self._deadlines.settings(in_transaction=True)
            batch: Batch = ((self._begin_sql(), (), None),)
            if settings and not self._joined:
                batch += (_setup(settings, xid=False),)
            batch += (statement,)
        else:
            batch = (statement,)
        yield from self._send("opening a savepoint", batch)
        self._savepoints.append(name)
        return name

    def _close_savepoint_steps(
        self, name: str, failure: BaseException | None, aborted: bool
    ) -> Steps[None]:
        """RELEASE the savepoint, or roll back to it after an exception (keeping the
        caller's exception whatever happens to the rollback)."""
        if name not in self._savepoints:
            return  # already ended with the block
        depth = self._savepoints.index(name) + 1
        del self._savepoints[depth - 1 :]
        if failure is None:
            self._usable("releasing a savepoint", aborted)
            yield from self._send(
                "releasing a savepoint", ((f"RELEASE SAVEPOINT {name}", (), None),)
            )
            return
        if self._lost is not None:
            failure.add_note(f"the savepoint was not rolled back: {self._lost}")
            return
        batch: Batch = (
            (f"ROLLBACK TO SAVEPOINT {name}", (), None),
            (f"RELEASE SAVEPOINT {name}", (), None),
        )
        try:
            yield from self._send("rolling back to a savepoint", batch)
            if self._interrupted is not None and self._interrupted >= depth:
                self._interrupted = None  # what the interrupted operation did is undone
        except PersistenceError as lost:
            # The caller's own error is what propagates; the whole transaction is rolled
            # back at the end of the block anyway (the server discards it with the
            # connection). The loss is logged and told on the caller's error.
            logger.warning("rolling back to a savepoint failed: %s", lost, exc_info=True)
            failure.add_note(f"then rolling back to the savepoint failed: {lost}")

    def _end_steps(self, failed: bool, aborted: bool) -> Steps[None]:
        """The end of the block: commit (or roll back after an exception), then give the
        connection back, always.

        A savepoint still open (left out of order) means unfinished work: nothing since
        the last commit is committed, and `PersistenceError` says so.
        """
        try:
            if self._savepoints and not failed:
                self._savepoints = []
                yield from self._rollback_quietly()
                raise PersistenceError(
                    "the unit of work ended while a savepoint() block was still open: "
                    "nothing since the last commit was committed"
                )
            self._savepoints = []
            if failed:
                yield from self._rollback_quietly()
            else:
                yield from self._commit_steps(aborted)
        finally:
            yield Release()


def inside_a_savepoint(action: str) -> PersistenceError:
    """The error for `commit()` or `rollback()` inside `savepoint()` (the fakes' too)."""
    return PersistenceError(
        f"{action} inside `savepoint()` is refused: it would end the savepoint's "
        "transaction half-way; leave the savepoint block first"
    )


def with_session_setup(batch: Batch) -> tuple[Batch, int]:
    """`batch` with a new connection's session set-up in front (UTC), and how many
    results that adds. Run with nothing around it: a statement in front of a BEGIN would
    make the BEGIN part of the same transaction, so the set-up then ends its own."""
    setup = statements.session_setup()
    ahead: Batch = ((setup.sql, setup.args({}), None),)
    if batch[0][0].startswith("BEGIN"):
        ahead += (("COMMIT", (), None),)
    return (*ahead, *batch), len(ahead)


def multi_statement(batch: Batch) -> tuple[str, tuple[Any, ...], TaskRows | None]:
    """Several statements as one: their SQL joined, their parameters in order, and the
    row factory of the one that builds tasks.

    Sent as one simple query (one round trip), with the parameters bound by psycopg's
    client-side binding (each value quoted as a literal by psycopg's own dumpers): a
    pipeline of the same statements costs the client three times as much CPU. A simple
    query's statements run in one transaction (BEGIN's, or an implicit one that a
    `SET LOCAL` lasts through).
    """
    args: tuple[Any, ...] = ()
    rows = None
    for _sql, statement_args, statement_rows in batch:
        args += statement_args
        rows = statement_rows or rows
    return "; ".join(sql for sql, _args, _rows in batch), args, rows


def _replica_status(token: str | None) -> tuple[str, tuple[Any, ...], None]:
    statement = statements.replica_status()
    return statement.sql, statement.args({"token": token}), None


def _replica_behind(
    status: tuple[bool, bool | None, float, str | None], max_lag: float, unreplayed: float
) -> tuple[str, str | None] | None:
    """Why a replica can't serve a read (from its status row, and for how long it has
    missed a commit this process made) and whether to leave it aside, or `None` if it can
    serve it."""
    standby, replayed, server_lag, _position = status
    lag = max(server_lag, unreplayed)
    if not standby:
        return None  # a primary is never behind
    if lag > max_lag:
        return f"it is {lag:.1f} s behind (the bound is {max_lag:g} s)", "lagging"
    if replayed is False:
        # Behind this one unit's token only: other reads may still use it.
        return "it has not yet replayed the unit's causal token", None
    return None


def _raise(error: PersistenceError, cause: BaseException) -> NoReturn:
    # A driver error is raised as the package's, chained; one that already is the
    # package's (a failed connect, translated where it happened) keeps its own chain.
    if error is cause:
        raise error
    raise error from cause


@functools.cache
def deadlines(timeout: float | None, idle_in_transaction: float | None) -> Deadlines:
    """The bounds to set, from seconds (`None`: unbounded)."""

    def ms(seconds: float | None) -> int | None:
        return None if seconds is None else max(1, round(seconds * 1000))

    return Deadlines(ms(timeout), ms(idle_in_transaction))


def _interrupted_error(action: str, outcome: str) -> PersistenceError:
    return PersistenceError(
        f"{action}: an earlier operation of this unit of work was interrupted half-way "
        f"(cancelled), so what it did is unknown: {outcome}"
    )


def _aborted_error(action: str, outcome: str) -> DatabaseError:
    error = DatabaseError(
        f"{action}: an earlier statement failed and the server aborted the transaction "
        f"(SQLSTATE 25P02): {outcome}"
    )
    error.sqlstate = "25P02"
    return error


def aborted(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether `connection`'s transaction was aborted on the server by a failed statement."""
    return (
        connection is not None
        and connection.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR
    )


def in_transaction(
    connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> bool:
    """Whether `connection` is in a transaction block (open or aborted) on the server."""
    status = connection.pgconn.transaction_status
    return status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)
