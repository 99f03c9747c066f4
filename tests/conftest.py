"""Shared fixtures: a generated corpus and a catalog per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.corpus import write_good  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two cores: torch with two threads beside other work runs many times slower."""
    try:
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real Stable Diffusion pipeline folder (random weights, built offline),
    made once: tests only read it."""
    import torch

    from tests.fixtures.tiny_pipeline import save_tiny_pipeline

    torch.set_num_threads(1)
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def model(tiny_dir: Path):
    """The tiny pipeline loaded on the CPU, shared by one module's tests."""
    from curator.generation.loading import load_pipeline

    return load_pipeline(str(tiny_dir), device="cpu")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_good(root)
    return root


@pytest.fixture
def catalog(db_path: Path):
    from db import open_catalog

    cat = open_catalog(str(db_path))
    yield cat
    cat.close()


# --- The engine under test: SQLite files by default, or fresh databases on a server. ---
#
# `--engine postgresql` (server from `--pg-url` or $CURATOR_TEST_PG_URL, a URL whose
# role may create databases) gives every test using `db_path` / `catalog` its own
# database, cloned from a template migrated once per session.

PG_ENV = "CURATOR_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://curator@127.0.0.1:55432/postgres"

# Tests about SQLite files themselves (pragmas, backups, foreign files): they have
# no meaning on a server and run on the SQLite pass only.
SQLITE_ONLY = {
    "test_new_catalog_is_at_head_with_sqlite_pragmas",
    "test_older_catalog_is_backed_up_then_upgraded",
    "test_foreign_sqlite_file_is_refused",
    "test_tag_queries_use_the_covering_index",  # reads SQLite's EXPLAIN QUERY PLAN
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="database engine for the catalog fixtures (default sqlite)",
    )
    parser.addoption(
        "--pg-url",
        default=None,
        help=f"PostgreSQL server for --engine postgresql (default ${PG_ENV} or {PG_DEFAULT})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: needs a PostgreSQL server (--engine)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_pg = config.getoption("--engine") == "postgresql"
    for item in items:
        name = getattr(item, "originalname", item.name)
        if on_pg and name in SQLITE_ONLY:
            item.add_marker(pytest.mark.skip(reason="about SQLite files"))
        if not on_pg and item.get_closest_marker("postgresql"):
            item.add_marker(pytest.mark.skip(reason="needs --engine postgresql"))


class PgServer:
    """Creates and drops throwaway databases on one server."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=_null_pool())
        self.prefix = f"curator_test_{os.getpid()}"
        self.count = 0
        self.template = f"{self.prefix}_template"
        self._sql(f'DROP DATABASE IF EXISTS "{self.template}"')
        self._sql(f'CREATE DATABASE "{self.template}"')
        from db import open_catalog

        open_catalog(self.url_of(self.template)).close()

    def _sql(self, statement: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(statement))

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        self.count += 1
        name = f"{self.prefix}_{self.count}"
        self._sql(f'DROP DATABASE IF EXISTS "{name}"')
        self._sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.template)
        self.admin.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


@pytest.fixture(scope="session")
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--engine")


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest):
    """The server for --engine postgresql; a test asking for it otherwise is skipped."""
    if request.config.getoption("--engine") != "postgresql":
        pytest.skip("needs --engine postgresql")
    url = request.config.getoption("--pg-url") or os.environ.get(PG_ENV) or PG_DEFAULT
    server = PgServer(url)
    yield server
    server.close()


@pytest.fixture
def pg_database(pg_server: PgServer):
    """A fresh, migrated database on the server: its URL (dropped after the test)."""
    name = pg_server.create()
    yield pg_server.url_of(name)
    pg_server.drop(name)


@pytest.fixture
def db_path(tmp_path: Path, request: pytest.FixtureRequest):
    """Where the test's catalog lives: a SQLite file, or a server database's URL."""
    if request.config.getoption("--engine") == "postgresql":
        return request.getfixturevalue("pg_database")
    return tmp_path / "catalog.db"


@pytest.fixture(scope="session")
def new_catalog_spec(request: pytest.FixtureRequest):
    """For fixtures wider than one test: `spec(path)` is `path` on SQLite, or the URL of
    a fresh server database (dropped at the end of the session) on PostgreSQL."""
    made: list[str] = []
    server = None
    if request.config.getoption("--engine") == "postgresql":
        server = request.getfixturevalue("pg_server")

    def spec(path: Path):
        if server is None:
            return path
        made.append(server.create())
        return server.url_of(made[-1])

    yield spec
    for name in made:
        server.drop(name)
