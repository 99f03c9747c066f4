"""Engine and session factory: SQLite by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DB = "curator.db"
BUSY_TIMEOUT_MS = 60_000


def database_url(spec: str | os.PathLike[str] | None = None) -> str:
    """A path or URL from `--db`, else `$CURATOR_DB`, else `./curator.db`."""
    spec = os.fspath(spec) if spec is not None else os.environ.get("CURATOR_DB") or DEFAULT_DB
    if "://" in spec:
        return _with_installed_driver(spec)
    return f"sqlite:///{Path(spec).expanduser().resolve()}"


def _with_installed_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; use psycopg (3) when only it is here."""
    import importlib.util

    scheme, rest = url.split("://", 1)
    if scheme == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        if importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
    return url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str) -> Engine:
    if not is_sqlite(url):
        connect_args = {}
        parsed = make_url(url)
        if parsed.get_backend_name() == "postgresql" and "options" not in parsed.query:
            # No JIT compilation: the catalog's queries are short index walks, which its
            # cost threshold mistakes for big ones once tag ids make the row estimates
            # honest; compiling then costs a second, more than the query itself.
            connect_args["options"] = "-c jit=off"
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy, not pysqlite, issue BEGIN, so writers can use IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # a read-only catalog keeps its journal mode and can still be read
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # A writer takes the write lock up front: two processes then queue on the
        # busy timeout instead of failing when a read transaction tries to upgrade.
        if conn.get_execution_options().get("curator_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


class Catalog:
    """An open catalog: the engine plus session factories for readers and writers."""

    def __init__(self, url: str, engine: Engine):
        self.url = url
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(
            engine.execution_options(curator_write=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for a server database."""
        if not self.is_sqlite:
            return None
        db = make_url(self.url).database
        if db and db.startswith("file:"):  # a SQLite URI filename (`?mode=ro&uri=true`)
            from urllib.parse import unquote, urlparse

            db = unquote(urlparse(db).path) or None
        return Path(db) if db and db != ":memory:" else None

    def session(self) -> Session:
        """A session for reading (and small writes that may wait their turn)."""
        return self._read()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on error."""
        with self._write() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")

# PostgreSQL's "deadlock detected" and "could not serialize access": the server aborted
# one of two racing transactions, and running it again succeeds.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient(error: BaseException) -> bool:
    """Whether `error` is a write the server aborted only to let a racing one through."""
    driver_error = getattr(error, "orig", None)
    code = getattr(driver_error, "sqlstate", None) or getattr(driver_error, "pgcode", None)
    return isinstance(error, DBAPIError) and code in TRANSIENT_SQLSTATES


def retry_transient(write: Callable[[], T], attempts: int = 6) -> T:
    """`write()` (one whole transaction), run again when the server aborted it to break
    a deadlock with another writer; waits grow from about 10 ms, jittered so the
    racers do not meet again."""
    for attempt in range(attempts - 1):
        try:
            return write()
        except DBAPIError as error:
            if not is_transient(error):
                raise
            time.sleep(random.uniform(0.01, 0.03) * 2**attempt)
    return write()
