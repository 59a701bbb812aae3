"""`python -m persistence doctor` as a user runs it: which database, why, and failures that say
what to do — one line, no traceback, no part of the password."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from persistence import load_settings
from persistence.database import normalize_url
from persistence.doctor import main as doctor_main
from persistence.embedded import embedded_url
from persistence.testing import TestDatabase


@pytest.fixture(scope="module")
def embedded_dir() -> Path:
    """The embedded server's data folder, with the server running (started here if this run
    uses another server), so that doctor's own handle on it reuses it."""
    data_dir = load_settings().embedded_dir.expanduser().resolve()
    embedded_url(data_dir)
    return data_dir


def doctor(cwd: Path, **env: str | None) -> subprocess.CompletedProcess[str]:
    """Run doctor in `cwd` (a test's own folder: no developer's `.env` is read) with the
    environment changed by `env` (None: removed)."""
    # The test plugin points DATABASE_URL at the test database: start without it.
    run_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for name, value in env.items():
        if value is None:
            run_env.pop(name, None)
        else:
            run_env[name] = value
    return subprocess.run(
        [sys.executable, "-m", "persistence", "doctor"],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def first_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0]


def test_doctor_says_it_checked_the_embedded_server_because_database_url_is_unset(
    tmp_path: Path, embedded_dir: Path
):
    done = doctor(tmp_path, DATABASE_URL=None, PERSISTENCE_EMBEDDED_DIR=str(embedded_dir))
    line = first_line(done)
    assert line.startswith("database:   embedded PostgreSQL (DATABASE_URL is unset) at "), line
    assert "note:" not in done.stdout


def test_doctor_says_an_empty_database_url_is_treated_as_unset_and_hides_dot_env(
    tmp_path: Path, embedded_dir: Path
):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://u:Zq7Xw9pw@127.0.0.1:1/db\n")
    done = doctor(tmp_path, DATABASE_URL="", PERSISTENCE_EMBEDDED_DIR=str(embedded_dir))
    line = first_line(done)
    assert line.startswith(
        "database:   embedded PostgreSQL "
        "(DATABASE_URL is set but empty in the environment: treated as unset) at "
    ), line
    note = done.stdout.splitlines()[1]
    assert note.startswith("note:       the DATABASE_URL in .env is not used"), note
    assert "unset DATABASE_URL" in note
    assert "Zq7Xw9pw" not in done.stdout + done.stderr


def test_doctor_names_where_a_set_database_url_came_from(
    tmp_path: Path, persistence_database: TestDatabase
):
    from_env = doctor(tmp_path, DATABASE_URL=persistence_database.url)
    assert first_line(from_env).endswith(" (DATABASE_URL from the environment)")
    (tmp_path / ".env").write_text(f"DATABASE_URL={persistence_database.url}\n")
    from_file = doctor(tmp_path, DATABASE_URL=None)
    assert first_line(from_file).endswith(" (DATABASE_URL from .env)")
    password = normalize_url(persistence_database.url).password
    if password:
        assert password not in from_env.stdout + from_file.stdout


def _failed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_doctor_refuses_a_port_that_is_not_a_number_in_one_line(tmp_path: Path):
    line = _failed(doctor(tmp_path, DATABASE_URL="postgresql://u:p@host:abc/db"))
    assert line.startswith("doctor: DATABASE_URL's port is not a number: expected postgresql://")


def test_doctor_says_what_to_do_when_the_server_refuses_the_login(
    tmp_path: Path, persistence_database: TestDatabase
):
    # Behind a pooler, its own answer to an unknown user varies: ask the server itself.
    direct = os.environ.get("PERSISTENCE_TEST_DIRECT_URL") or persistence_database.url
    url = normalize_url(direct).set(username="no_such_role_for_doctor", password="Zq7Xw9pw")
    line = _failed(doctor(tmp_path, DATABASE_URL=url.render_as_string(hide_password=False)))
    assert "the server refused the credentials in DATABASE_URL" in line
    assert "SQLSTATE None" not in line
    assert line.endswith(
        "; check the user name and password in DATABASE_URL from the environment "
        "(percent-encode '@', ':', '/' and '%' in them)"
    )
    assert "Zq7Xw9pw" not in line


def test_doctor_checks_each_read_replica_and_names_database_read_url(
    tmp_path: Path, persistence_database: TestDatabase
):
    primary = persistence_database.url
    refused = normalize_url(os.environ.get("PERSISTENCE_TEST_DIRECT_URL") or primary).set(
        username="no_such_role_for_doctor", password="Zq7Xw9pw"
    )
    two = f"{primary},{refused.render_as_string(hide_password=False)}"
    line = _failed(doctor(tmp_path, DATABASE_URL=primary, DATABASE_READ_URL=two))
    assert "connecting to read replica #2" in line
    assert "the server refused the credentials in DATABASE_READ_URL" in line
    assert line.endswith(
        "check the user name and password in DATABASE_READ_URL "
        "(percent-encode '@', ':', '/' and '%' in them)"
    )
    assert "Zq7Xw9pw" not in line
    done = doctor(tmp_path, DATABASE_URL=primary, DATABASE_READ_URL=primary)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("replica:    #1 (")
    line = _failed(doctor(tmp_path, DATABASE_URL=primary, DATABASE_READ_URL="mysql://h/db"))
    assert line.startswith("doctor: DATABASE_READ_URL (replica #1) must be a PostgreSQL URL")


def test_doctor_refuses_a_password_with_an_unencoded_at_showing_no_part_of_it(tmp_path: Path):
    # SQLAlchemy and libpq end the password at the first "@": the rest became the host,
    # and "failed to resolve host 'Xw9@127.0.0.1'" printed it.
    line = _failed(doctor(tmp_path, DATABASE_URL="postgresql://someone:Zq7@Xw9@127.0.0.1/none"))
    assert "DATABASE_URL has more than one '@'" in line
    assert "write '@' as %40" in line
    assert "Zq7" not in line
    assert "Xw9" not in line


@pytest.mark.parametrize(
    "password",
    [
        "Zq7@Xw9",
        "Zq7@Xw9/Vb4",
        "Zq7:Xw9",
        "Zq7/Xw9",
        "Zq7%Xw9",
        "Zq7%40Xw9",  # percent-encoded "@", ":", "/", "%"
        "Zq7%3AXw9",
        "Zq7%2FXw9",
        "Zq7%25Xw9",
    ],
)
def test_doctor_never_shows_any_part_of_a_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, password: str
):
    # In-process (the subprocess runs above prove the command itself): one line, exit 1.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://someone:{password}@127.0.0.1:1/none")
    out, err = io.StringIO(), io.StringIO()
    assert doctor_main([], out=out, err=err) == 1
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    for part in ("Zq7", "Xw9", "Vb4"):
        assert part not in lines[0]
    if "@" in password:
        assert "DATABASE_URL has more than one '@'" in lines[0]
    else:
        assert "could not connect" in lines[0]
        assert lines[0].endswith(
            "; check the host, port and database name in DATABASE_URL from the environment "
            "and that the server is running and reachable from here"
        )
