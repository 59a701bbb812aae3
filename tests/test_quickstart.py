"""The quickstart runs end to end and shows data surviving a restart."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import Engine

from persistence.testing import TestDatabase


def _run_quickstart(url: str) -> str:
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "persistence.quickstart"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_shows_every_guarantee_and_persists_across_runs(
    persistence_database: TestDatabase, persistence_engine: Engine
):
    first = _run_quickstart(persistence_database.url)
    assert "nothing yet: this is the first run" in first
    assert "bob reads alice's task" in first
    assert ": None" in first
    assert "TaskNotFoundError" in first
    assert "alice's tasks before: 1, after: 1" in first
    assert "committed, newest first: ['Water the plants', 'Buy milk']" in first

    second = _run_quickstart(persistence_database.url)
    assert "alice already has 2 task(s)" in second
    assert "data survives restarts" in second
    assert "(4 in all)" in second
