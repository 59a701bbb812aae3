"""Every contract test of the sync unit of work, run against `AsyncUnitOfWork` (see conftest)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tests import test_bulk_and_pages, test_repository, test_unit_of_work, test_validation


def _tests_of(*modules: ModuleType) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                assert name not in found, f"two contract tests named {name}"
                found[name] = value
    return found


globals().update(
    _tests_of(test_repository, test_unit_of_work, test_validation, test_bulk_and_pages)
)
