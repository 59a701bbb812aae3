"""The name pip installs (not PyPI's Zope `persistence`), and hints that name it: in the docs,
in the missing-extra errors, and when factory-boy is not installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from persistence import DISTRIBUTION, MissingExtraError
from persistence.errors import ConfigurationError
from persistence.extras import install_command
from persistence.testing import TestDatabase

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]

# Everything a user reads an install command in.
_DOCUMENTS = [
    ROOT / "README.md",
    ROOT / ".env.example",
    ROOT / "pyproject.toml",
    *ROOT.glob("specs/**/*.md"),
    *ROOT.glob("examples/**/*.py"),
    *ROOT.glob("persistence/**/*.py"),
    *(path for path in ROOT.glob(".ci/*") if path.is_file()),
]
# `pip install persistence` or `persistence[extra]`: PyPI's `persistence` is a Zope package.
_WRONG = re.compile(r"pip install\s+['\"]?persistence(?![\w.-])|(?<![\w./-])persistence\[")


def test_the_distribution_is_named_in_one_place_and_is_not_zopes():
    assert NAME != "persistence", "on PyPI that is an unrelated Zope package"
    assert DISTRIBUTION == NAME
    assert f"{NAME}[embedded,test]" in PROJECT["optional-dependencies"]["dev"]
    assert install_command() == f"pip install {NAME}"
    assert install_command("embedded", "test") == f"pip install '{NAME}[embedded,test]'"


def test_every_install_hint_in_the_docs_and_code_names_the_distribution():
    wrong = [
        f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}: {match.group()}"
        for path in _DOCUMENTS
        for text in [path.read_text()]
        for match in _WRONG.finditer(text)
    ]
    assert wrong == []
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {NAME}`" in readme  # the production install
    assert f"pip install '{NAME}[embedded,test]'" in readme  # the test kit
    assert f"pip install '{NAME}[embedded]'" in (ROOT / ".env.example").read_text()


_PROBE = """
import json, sys
sys.modules["factory"] = None  # as if factory-boy (the `test` extra) were not installed
import persistence.testing  # the pytest plugin itself still loads
from persistence import ConfigurationError
results = []
for attempt in ("from persistence.testing import TaskFactory", "import persistence.factories"):
    try:
        exec(attempt)
    except ConfigurationError as exc:
        results.append(
            [type(exc).__name__, isinstance(exc, ImportError), getattr(exc, "name", None), str(exc)]
        )
print(json.dumps(results))
"""


def test_without_factory_boy_the_task_factory_names_the_extra_to_install(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 2, results
    for kind, is_import_error, module, message in results:
        assert (kind, is_import_error, module) == ("MissingExtraError", True, "factory")
        assert "needs factory-boy, which is not installed" in message
        assert message.endswith(f"install the extra with: pip install '{NAME}[test]'")
    assert issubclass(MissingExtraError, ConfigurationError)


def test_without_factory_boy_the_task_factory_fixture_names_the_extra_to_install(
    tmp_path: Path, persistence_database: TestDatabase
):
    # A project's own test run: the plugin's `task_factory` fixture without factory-boy.
    (tmp_path / "conftest.py").write_text('import sys\n\nsys.modules["factory"] = None\n')
    (tmp_path / "test_project.py").write_text(
        "def test_seeds_a_task(task_factory):\n    task_factory(user_id='alice')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=short"],
        cwd=tmp_path,
        env=dict(os.environ),  # DATABASE_URL: the test database's server
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 error" in out, out
    assert "MissingExtraError: TaskFactory" in out, out
    assert f"pip install '{NAME}[test]'" in out
    assert "No module named 'factory" not in out
