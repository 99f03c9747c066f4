"""Open a catalog, creating or upgrading its schema with Alembic.

An older catalog is copied to `NAME.bak-REVISION` before it is upgraded, so a
failed or unwanted upgrade never costs the user their catalog.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from db.engine import Catalog, database_url, make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


class CatalogOpenError(RuntimeError):
    """The catalog could not be opened or upgraded (the message says why)."""


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _backup_sqlite(path: Path, revision: str) -> Path:
    target = path.with_name(f"{path.name}.bak-{revision}")
    src = sqlite3.connect(path)
    try:
        dst = sqlite3.connect(target)
        with dst:
            src.backup(dst)
        dst.close()
    finally:
        src.close()
    return target


def upgrade(catalog: Catalog) -> str | None:
    """Bring the schema to head; return the backup path's name if one was written."""
    head = head_revision()
    with catalog.engine.connect() as conn:
        current = current_revision(conn)
        has_tables = bool(inspect(conn).get_table_names())
    if current == head:
        return None
    backup = None
    if current is not None and catalog.path is not None and catalog.path.exists():
        backup = str(_backup_sqlite(catalog.path, current))
    elif current is None and has_tables and "images" in inspect(catalog.engine).get_table_names():
        raise CatalogOpenError(
            f"{catalog.url} has tables but no schema version; it is not a Curator catalog"
        )
    cfg = alembic_config()
    # One write transaction around the whole migration: a second process opening
    # the same new catalog waits, then finds it at head and does nothing.
    with catalog.engine.execution_options(curator_write=True).begin() as conn:
        if current_revision(conn) != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return backup


def open_catalog(spec: str | None = None) -> Catalog:
    """Open (creating or upgrading as needed) the catalog at a path or SQLAlchemy URL."""
    url = database_url(spec)
    try:
        catalog = Catalog(url, make_engine(url))
        if catalog.path is not None and not catalog.path.parent.is_dir():
            raise CatalogOpenError(f"cannot create catalog {catalog.path}: no such folder")
        upgrade(catalog)
    except OperationalError as exc:
        raise CatalogOpenError(f"cannot open catalog {url}: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise CatalogOpenError(f"cannot open catalog {url}: {exc}") from exc
    return catalog
