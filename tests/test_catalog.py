"""Opening, creating and upgrading catalogs."""

from __future__ import annotations

import io
import sqlite3

import pytest
from alembic import command
from sqlalchemy import create_mock_engine, inspect, select

from db import open_catalog
from db.engine import database_url, make_engine, retry_transient
from db.migrate import CatalogOpenError, alembic_config, head_revision
from db.schema import Base, Image, to_signed64, to_unsigned64


def test_new_catalog_is_at_head_with_sqlite_pragmas(db_path):
    with open_catalog(str(db_path)) as cat, cat.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert version == head_revision()
        assert {"images", "files", "tags", "image_tags", "problems", "runs"} <= set(
            inspect(conn).get_table_names()
        )


def test_db_spec_from_env_and_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CURATOR_DB", raising=False)
    assert database_url() == f"sqlite:///{tmp_path / 'curator.db'}"
    monkeypatch.setenv("CURATOR_DB", "postgresql+psycopg://u@h/db")
    assert database_url() == "postgresql+psycopg://u@h/db"
    assert database_url("x.db") == f"sqlite:///{tmp_path / 'x.db'}"


def test_older_catalog_is_backed_up_then_upgraded(db_path):
    engine = make_engine(f"sqlite:///{db_path}")
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO images (sha256, bytes, width, height, format, mode, frames, "
            "orientation, status, added_at) VALUES ('ab', 1, 2, 3, 'PNG', 'RGB', 1, 1, "
            "'pending', '2024-01-01')"
        )
    engine.dispose()
    with open_catalog(str(db_path)) as cat, cat.session() as s:
        assert s.scalar(select(Image.sha256)) == "ab"
        assert "tag_rules" in inspect(cat.engine).get_table_names()
    backup = db_path.with_name(db_path.name + ".bak-0001")
    assert backup.exists()
    old = sqlite3.connect(backup)
    assert old.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
    assert old.execute("SELECT count(*) FROM images").fetchone() == (1,)
    old.close()
    # Opening again at head writes no new backup.
    backup.unlink()
    open_catalog(str(db_path)).close()
    assert not backup.exists()


def test_foreign_sqlite_file_is_refused(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE images (x)")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogOpenError, match="not a Curator catalog"):
        open_catalog(str(db_path))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogOpenError, match="no such folder"):
        open_catalog(str(tmp_path / "nope" / "c.db"))


def test_schema_creates_on_postgresql():
    """The models and the migrations render to PostgreSQL DDL (nothing SQLite-only)."""
    ddl: list[str] = []
    engine = create_mock_engine(
        "postgresql+psycopg2://",
        lambda sql, *a, **k: ddl.append(str(sql.compile(dialect=engine.dialect))),
    )
    Base.metadata.create_all(engine, checkfirst=False)
    text = "\n".join(ddl)
    assert "CREATE TABLE images" in text and "BIGINT" in text
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", "postgresql://")
    buf = io.StringIO()
    cfg.output_buffer = buf
    command.upgrade(cfg, "head", sql=True)
    migrated = buf.getvalue()
    for table in Base.metadata.tables:
        assert f"CREATE TABLE {table}" in migrated, table


def test_phash_signed_storage_round_trips():
    for value in (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        stored = to_signed64(value)
        assert -(1 << 63) <= stored < (1 << 63)
        assert to_unsigned64(stored) == value


def test_migrations_match_the_models(db_path):
    """Every model change comes with its migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with open_catalog(str(db_path)) as cat, cat.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate  # as psycopg reports it


def test_a_write_aborted_to_break_a_deadlock_runs_again() -> None:
    """PostgreSQL aborts one of two deadlocked writers (40P01) or a serialization
    conflict (40001); that transaction is run again. Other errors are not retried."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    calls = []

    def deadlocks_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            code = "40P01" if len(calls) == 1 else "40001"
            raise OperationalError("UPDATE files", {}, _DriverError(code))
        return "written"

    assert retry_transient(deadlocks_twice) == "written" and len(calls) == 3

    calls.clear()

    def conflicts() -> None:
        calls.append(1)
        raise IntegrityError("INSERT INTO images", {}, _DriverError("23505"))

    with pytest.raises(IntegrityError):
        retry_transient(conflicts)
    assert len(calls) == 1

    calls.clear()

    def always_deadlocks() -> None:
        calls.append(1)
        raise OperationalError("UPDATE files", {}, _DriverError("40P01"))

    with pytest.raises(OperationalError):
        retry_transient(always_deadlocks, attempts=3)
    assert len(calls) == 3
