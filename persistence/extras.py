"""The distribution name, its optional extras, and the error raised when one is missing."""

from __future__ import annotations

from persistence.errors import ConfigurationError

__all__ = ["DISTRIBUTION", "MissingExtraError", "install_command"]

DISTRIBUTION = "todo-task-persistence"
"""The name to `pip install` (the import name is `persistence`; on PyPI `persistence` is an
unrelated Zope package). Every install hint the package gives is built from it."""


def install_command(*extras: str) -> str:
    """The pip command installing this package with `extras`, ready to paste into a shell."""
    if not extras:
        return f"pip install {DISTRIBUTION}"
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


class MissingExtraError(ConfigurationError, ImportError):
    """An optional part was used without the extra that installs it; the message gives the
    pip command. Also an `ImportError`, so `except ImportError` probes keep working."""

    def __init__(self, feature: str, requirement: str, *, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs {requirement}, which is not installed: "
            f"install the extra with: {install_command(extra)}",
            name=module,
        )
        self.extra = extra
