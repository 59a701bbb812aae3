"""Every contract test, run against `AsyncFakeUnitOfWork` (see conftest)."""

from __future__ import annotations

from tests import test_bulk_and_pages, test_repository, test_unit_of_work, test_validation
from tests.contract.test_async_contract import _tests_of

globals().update(
    _tests_of(test_repository, test_unit_of_work, test_validation, test_bulk_and_pages)
)
