"""Cold start: `import persistence` imports none of its parts; a sync application never
loads the asyncio side of the package or SQLAlchemy's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has after running `statement`."""
    probe = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_package_imports_none_of_its_parts():
    loaded = loaded_after("import persistence")
    assert {"sqlalchemy", "psycopg", "sqlmodel", "pydantic", "asyncio"}.isdisjoint(loaded)
    assert not any(name.startswith("persistence.") for name in loaded)


@pytest.mark.parametrize(
    "statement",
    [
        "from persistence import UnitOfWork",
        "from persistence import UnitOfWork, init_db, run_in_transaction, create_engine",
        "from persistence import FakeUnitOfWork, FakeDatabase",
    ],
)
def test_the_sync_path_never_loads_the_async_side(statement: str):
    loaded = loaded_after(statement)
    assert "persistence.async_unit_of_work" not in loaded
    assert "persistence.async_database" not in loaded
    assert "sqlalchemy.ext.asyncio" not in loaded
    # greenlet only if the dependencies themselves load it (SQLAlchemy 2.0 does, 2.1 not).
    dependencies = loaded_after("import sqlalchemy, sqlalchemy.orm, sqlmodel, psycopg")
    assert "greenlet" not in loaded - dependencies


def test_every_public_name_is_importable_and_listed():
    import persistence

    for name in persistence.__all__:
        assert getattr(persistence, name) is not None
    # Every name the package resolves lazily is listed, and `import *` gives exactly those.
    lazy = set(persistence._HOMES)
    assert lazy <= set(persistence.__all__)
    star: dict[str, object] = {}
    exec("from persistence import *", star)
    assert set(star) - {"__builtins__"} == set(persistence.__all__)
    with pytest.raises(AttributeError):
        persistence.not_a_name  # noqa: B018
