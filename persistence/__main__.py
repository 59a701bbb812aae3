"""`python -m persistence doctor` (and `quickstart`)."""

from __future__ import annotations

import sys

USAGE = "usage: python -m persistence {doctor,quickstart}"


def main(argv: list[str]) -> int:
    """Dispatch to a sub-command; return the exit code."""
    command = argv[0] if argv else ""
    if command == "doctor":
        from persistence.doctor import main as doctor

        return doctor(argv[1:])
    if command == "quickstart":
        from persistence.quickstart import main as quickstart

        return quickstart()
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
