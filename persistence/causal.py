"""Causal tokens: where the primary's WAL stood after a commit, for read-your-writes.

`uow.causal_token` after a committed unit of work that wrote is a plain string such as
`"16/B374D848"` (a PostgreSQL LSN). A read-only unit of work given it,
`UnitOfWork(read_only=True, after=token)`, reads from a replica only if the replica has
replayed at least that far; else from the primary. An API layer can carry the token
between requests in a cookie or a header; within one process, `LastWrites` keeps the
latest one per user.
"""

from __future__ import annotations

import threading

from persistence.errors import TaskValidationError
from persistence.models import check_after_token, check_user_id

__all__ = ["LastWrites", "position"]


def position(token: str) -> int:
    """The WAL position a token names, as a number (tokens compare by it).

    Raises `TaskValidationError` for something that is not a token.
    """
    # The same rule as `after=`: a token `LastWrites` keeps is one a unit of work takes.
    checked = check_after_token(token)
    if checked is None:
        raise TaskValidationError("after", "must be a causal token like '16/B374D848', got None")
    high, _slash, low = checked.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class LastWrites:
    """The latest causal token of each user's writes, for this process (thread-safe).

        last_writes = LastWrites()
        with UnitOfWork() as uow:
            uow.tasks.create(user_id="alice", title="Buy milk")
        last_writes.record("alice", uow.causal_token)
        with UnitOfWork(read_only=True, after=last_writes.get("alice")) as uow:
            uow.tasks.list(user_id="alice")  # sees "Buy milk", replica or not

    It keeps one short string per user that wrote; `forget(user_id)` drops one.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def record(self, user_id: str, token: str | None) -> None:
        """Remember `token` for `user_id` if it is later than the one kept (`None`: a unit
        of work that wrote nothing, ignored)."""
        user = check_user_id(user_id)
        if token is None:
            return
        at = position(token)
        with self._lock:
            kept = self._tokens.get(user)
            if kept is None or kept[0] < at:
                self._tokens[user] = (at, token)

    def get(self, user_id: str) -> str | None:
        """The latest token recorded for `user_id`, or `None`."""
        with self._lock:
            kept = self._tokens.get(user_id)
        return None if kept is None else kept[1]

    def forget(self, user_id: str) -> None:
        """Drop what is kept for `user_id`."""
        with self._lock:
            self._tokens.pop(user_id, None)
