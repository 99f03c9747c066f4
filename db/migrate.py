"""Open a catalog, creating or upgrading its schema with Alembic.

An older catalog is copied to `NAME.bak-REVISION` before it is upgraded, so a
failed or unwanted upgrade never costs the user their catalog. A SQLite file is
opened only when it is new, empty or already a Curator catalog: another program's
database is refused before anything (WAL mode, tables) is written to it, and so
is a catalog from a newer Curator.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from db.engine import Catalog, database_url, make_engine
from db.errors import database_error_message, missing_driver_message, redact

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


class CatalogOpenError(RuntimeError):
    """The catalog could not be opened or upgraded (the message says why)."""


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


# `revision = "0004"` or, as newer templates write it, `revision: str = "0004"`.
_REVISION = re.compile(r"^(down_revision|revision)(?:\s*:[^=\n]*)?\s*=\s*(.+?)\s*$", re.M)


def quick_head() -> str | None:
    """The head revision read from the migration files' text, without loading Alembic
    (a quarter of a second): None unless there is exactly one head."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        fields = dict(_REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in fields:
            continue
        revisions.add(fields["revision"].strip("\"'"))
        parents.update(re.findall(r"[\"']([^\"']+)[\"']", fields.get("down_revision", "")))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(catalog: Catalog) -> bool:
    """True when the catalog is already at head (the common case): no Alembic needed."""
    head = quick_head()
    if head is None:
        return False
    try:
        with catalog.engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False  # no version table yet: a new catalog
    return [r[0] for r in rows] == [head]


def known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown id
        return False


# Tables every Curator catalog has: how a catalog is told from another program's file.
CURATOR_TABLES = {"images", "files", "edits"}


def newer_message(where: str, revision: str) -> str:
    return (
        f"{where} was made by a newer Curator (schema {revision}): upgrade Curator "
        "to open it; nothing was changed"
    )


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not empty and not a Curator catalog, reading it only."""
    if path.is_dir():
        raise CatalogOpenError(
            f"{path} is a folder; give --db a file name, such as {path / 'curator.db'}"
        )
    if not path.exists() or path.stat().st_size == 0:
        return
    where = f"{path}"
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CatalogOpenError(f"cannot open catalog {where}: {exc}") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            version = row[0] if row else None
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise CatalogOpenError(
                f"{where} is not a SQLite database, so not a Curator catalog; "
                "give --db a new file name; nothing was changed"
            ) from exc
        raise CatalogOpenError(database_error_message(exc, where) or str(exc)) from exc
    finally:
        conn.close()
    if not tables:
        return
    ours = CURATOR_TABLES <= tables
    if not ours:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise CatalogOpenError(
            f"{where} is another program's SQLite database (tables: {shown}), not a Curator "
            "catalog; give --db a new file name; nothing was changed"
        )
    if version is not None and version != quick_head() and not known_revision(version):
        raise CatalogOpenError(newer_message(where, version))


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
    if current is not None and not known_revision(current):
        raise CatalogOpenError(newer_message(redact(catalog.url), current))
    backup = None
    if current is not None and catalog.path is not None and catalog.path.exists():
        backup = str(_backup_sqlite(catalog.path, current))
    elif current is None and has_tables and "images" in inspect(catalog.engine).get_table_names():
        raise CatalogOpenError(
            f"{redact(catalog.url)} has tables but no schema version; it is not a Curator catalog"
        )
    from alembic import command

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
    shown = redact(url)
    try:
        catalog = Catalog(url, make_engine(url))
    except ImportError as exc:
        raise CatalogOpenError(missing_driver_message(url, exc)) from exc
    except SQLAlchemyError as exc:
        raise CatalogOpenError(f"cannot open catalog {shown}: {_one_line(exc)}") from exc
    try:
        if catalog.path is not None:
            if not catalog.path.parent.is_dir():
                raise CatalogOpenError(f"cannot create catalog {catalog.path}: no such folder")
            check_sqlite_file(catalog.path)
            shown = str(catalog.path)
        if not _at_head(catalog):
            upgrade(catalog)
    except CatalogOpenError:
        catalog.close()
        raise
    except ImportError as exc:  # a driver imported on first connect
        catalog.close()
        raise CatalogOpenError(missing_driver_message(url, exc)) from exc
    except (SQLAlchemyError, sqlite3.Error) as exc:
        catalog.close()
        message = database_error_message(exc, f"catalog {shown}")
        raise CatalogOpenError(message or f"cannot open catalog {shown}") from exc
    return catalog


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).split("\n(Background on this error")[0]
    return redact(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
