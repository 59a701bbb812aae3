"""Shared helpers for the package's own tests; the fixtures come from `persistence.testing`."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:10]}"
