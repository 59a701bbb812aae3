"""A `LatencyProxy` in a process of its own, driven over its stdin/stdout.

In the measured process, the proxy's threads would compete with the client for the GIL
(a CPU-heavy client delays its own replies); in a process of their own they don't. The
parent reads and resets the counts with one-line commands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import TracebackType
from typing import IO, Any, Self

from benchmarks.common import ROOT
from benchmarks.proxy import LatencyProxy


class ProxyProcess:
    """`with ProxyProcess(target, rtt_ms=1) as proxy:` then connect to 127.0.0.1:`proxy.port`."""

    def __init__(self, target: tuple[str, int] | str, *, rtt_ms: float = 0.0) -> None:
        self._target = target
        self._rtt_ms = rtt_ms
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.proxy_process", json.dumps(self._target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.port = int(self._read()["port"])
        self.set_rtt(self._rtt_ms)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)

    def _read(self) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the proxy process exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _command(self, command: str) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def set_rtt(self, rtt_ms: float) -> None:
        self._command(f"rtt {rtt_ms}")

    def reset_counts(self) -> None:
        self._command("reset")

    def counts(self) -> tuple[int, int]:
        """(round trips, connections opened) since the last reset."""
        reply = self._command("counts")
        return int(reply["round_trips"]), int(reply["connections_opened"])


def _reply(out: IO[str], **values: Any) -> None:
    out.write(json.dumps(values) + "\n")
    out.flush()


def main() -> int:
    raw = json.loads(sys.argv[1])
    target: tuple[str, int] | str = raw if isinstance(raw, str) else (raw[0], int(raw[1]))
    with LatencyProxy(target) as proxy:
        _reply(sys.stdout, port=proxy.port)
        for line in sys.stdin:
            command, *args = line.split()
            if command == "rtt":
                proxy.rtt_ms = float(args[0])
            elif command == "reset":
                proxy.reset_counts()
            _reply(
                sys.stdout,
                round_trips=proxy.round_trips,
                connections_opened=proxy.connections_opened,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
