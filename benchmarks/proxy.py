"""A TCP proxy that injects latency, counts round trips and cuts connections on demand."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = ["LatencyProxy", "target_of"]

Matcher = Callable[[bytes], bool]
# Called with each chunk of a reply before it is relayed; it may block to hold it back.
Waiter = Callable[[bytes], object]
# Called as a client flight arrives; returns the waiter for the reply to that flight.
Gate = Callable[[], Waiter | None]

_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
_READY_FOR_QUERY = b"Z\x00\x00\x00\x05"


def target_of(host: str | None, port: int | None, socket_dir: str | None) -> tuple[str, int] | str:
    """Where to forward to reach a PostgreSQL server: its TCP port, or its Unix socket."""
    if socket_dir and socket_dir.startswith("/"):
        return f"{socket_dir}/.s.PGSQL.{port or 5432}"
    return (host or "127.0.0.1", port or 5432)


@dataclass
class _Link:
    """One client connection and its upstream twin."""

    client: socket.socket
    server: socket.socket
    last_from_client: bool = False
    cut_at_reply: bool = False
    ssl_requested: bool = False
    encrypted: bool = False
    reply_gate: Waiter | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class LatencyProxy:
    """Listens on 127.0.0.1 (`.port`) and forwards to `target`: `(host, port)` or the path of
    a Unix socket. Each chunk is held back `rtt_ms / 2` in each direction, in order, so one
    request and its reply cost one `rtt_ms`.

    `round_trips` counts client-to-server flights (the client sending again after the
    server has spoken) across all connections since the last `reset_counts()`: a test warms
    up its pool, resets, then reads the round trips of the work it measures, and
    `connections_opened` tells whether that work opened new connections.
    `hold_replies(gate)` holds each reply back until a condition of the test's holds.
    `cut_on(matcher)` drops the connection when a client chunk matches, before (or after)
    forwarding it: a network cut at a chosen point.
    """

    def __init__(self, target: tuple[str, int] | str, *, rtt_ms: float = 0.0) -> None:
        self.target = target
        self.rtt_ms = rtt_ms
        self.round_trips = 0
        self.connections_opened = 0
        self._gate: Gate | None = None
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._cut: tuple[Matcher, bool] | None = None
        self._flights_only = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._running = False
        self.refuse_new = False
        """While true, every new connection is closed at once, as an unreachable server's."""

    def __enter__(self) -> Self:
        self._running = True
        self._spawn(self._accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._running = False
        self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=2)

    def reset_counts(self) -> None:
        """Start counting round trips (and opened connections) from zero."""
        with self._lock:
            self.round_trips = 0
            self.connections_opened = 0

    def cut(self) -> None:
        """Close every open connection abruptly, both sides."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def cut_on(self, matcher: Matcher | None, *, after_forwarding: bool = False) -> None:
        """Cut a connection when the client sends a chunk for which `matcher` is true.

        `after_forwarding=False` drops that chunk (the server never sees it); `True`
        forwards it and cuts when the server's reply arrives, dropping the reply: the
        server has done what the chunk asked (a COMMIT is committed), the client never
        hears of it. `None` disarms. The chunk
        must be readable: over TLS, use `cut_at_flight`.
        """
        self._cut = None if matcher is None else (matcher, after_forwarding)
        self._flights_only = False

    def hold_replies(self, gate: Gate | None) -> None:
        """Let the test hold back the server's reply to each client flight.

        As a flight arrives, before it is forwarded, `gate()` is called in the proxy's
        thread. The waiter it returns (if any) is called with each chunk of the reply to
        that flight before the chunk is relayed, and may block to hold it (and what follows
        on that connection) back. `None` disarms.
        """
        self._gate = gate

    def cut_at_flight(self, flight: int, *, after_forwarding: bool = False) -> None:
        """Cut at the `flight`-th client-to-server flight from now (1 = the next one), on
        whatever connection it comes: works over TLS, where chunks can't be read."""
        seen = 0

        def nth(_data: bytes) -> bool:
            nonlocal seen
            seen += 1
            return seen == flight

        self._cut = (nth, after_forwarding)
        self._flights_only = True

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            return upstream
        upstream = socket.create_connection(self.target)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return upstream

    def _accept(self) -> None:
        # A timeout, because closing a listening socket does not wake a blocked accept().
        self._listener.settimeout(0.05)
        while self._running:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse_new:
                client.close()
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
                self.connections_opened += 1
            self._pump(link, from_client=True)
            self._pump(link, from_client=False)

    def _pump(self, link: _Link, *, from_client: bool) -> None:
        # One thread reads, another delivers each chunk when its delay is over, so a chunk
        # read 1 ms after another is delivered 1 ms after it.
        queue: collections.deque[tuple[float, bytes, Waiter | None]] = collections.deque()
        ready = threading.Condition()
        source = link.client if from_client else link.server
        sink = link.server if from_client else link.client

        def read() -> None:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                waiter = None
                if data and from_client:
                    cut = self._on_client_chunk(link, data)
                    if cut == "before":
                        return
                    link.cut_at_reply = link.cut_at_reply or cut == "after"
                elif data:
                    if link.cut_at_reply:
                        link.close()  # the server answered: drop the answer, and cut
                        return
                    waiter = link.reply_gate
                    self._on_server_chunk(link, data)
                with ready:
                    due = time.monotonic() + self.rtt_ms / 2000
                    queue.append((due, data, waiter))
                    ready.notify()
                if not data:
                    return

        def deliver() -> None:
            while True:
                with ready:
                    while not queue:
                        if link.closed:
                            return
                        ready.wait(0.05)
                    due, data, waiter = queue.popleft()
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not data:
                    link.close()
                    return
                if waiter is not None:
                    waiter(data)
                try:
                    sink.sendall(data)
                except OSError:
                    link.close()
                    return

        self._spawn(read)
        self._spawn(deliver)

    def _on_server_chunk(self, link: _Link, data: bytes) -> None:
        if link.ssl_requested and not link.encrypted and data[:1] == b"S":
            link.encrypted = True
        # The client waits for ReadyForQuery; what the server sends before it (the reply
        # to a BEGIN early in a pipeline, say) does not end the client's flight. Over TLS
        # the messages can't be read, so any reply counts.
        if link.encrypted or _READY_FOR_QUERY in data:
            link.last_from_client = False

    def _on_client_chunk(self, link: _Link, data: bytes) -> str | None:
        """Count a new flight; say whether to cut "before" or "after" forwarding `data`."""
        if data.startswith(_SSL_REQUEST):
            link.ssl_requested = True
        new_flight = not link.last_from_client
        if new_flight:
            with self._lock:
                self.round_trips += 1
            gate = self._gate
            link.reply_gate = None if gate is None else gate()
        link.last_from_client = True
        cut = self._cut
        if cut is None or (self._flights_only and not new_flight) or not cut[0](data):
            return None
        self._cut = None  # one cut per arming
        if cut[1]:
            return "after"
        link.close()
        return "before"
