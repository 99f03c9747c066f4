"""Copy a catalog between databases (SQLite ⇄ PostgreSQL), proving nothing changed.

Every table is read in primary-key order through the shared models, so values arrive
as the same Python objects whatever the engine, and written in batches inside one
transaction: a copy that fails leaves the destination as it was. A checksum of each
table's content, computed the same way on both sides after the copy, shows it lossless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Connection, Table, func, insert, select, text
from sqlalchemy.engine import make_url

from db.engine import Catalog, database_url, is_sqlite
from db.migrate import CatalogOpenError, open_catalog
from db.schema import Base

BATCH = 5000


class CopyError(CatalogOpenError):
    """The copy was refused or did not reproduce the source (the message says which)."""


@dataclass(frozen=True)
class TableCopy:
    table: str
    source_rows: int
    source_checksum: str
    dest_rows: int
    dest_checksum: str

    @property
    def same(self) -> bool:
        return (self.source_rows, self.source_checksum) == (self.dest_rows, self.dest_checksum)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"same": self.same}


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)  # parents before children: foreign keys hold


def _rows(conn: Connection, table: Table) -> Iterator[dict[str, Any]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
        select(table).order_by(*order)
    )
    for row in result.mappings():
        yield dict(row)


def _canonical(value: Any) -> Any:
    """One spelling per value, whichever engine and driver returned it (repr() of ints,
    floats, strings, bytes and naive datetimes is exact and stable)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def table_checksum(conn: Connection, table: Table) -> tuple[int, str]:
    """Rows and a SHA-256 of `table`'s content in primary-key order."""
    digest = hashlib.sha256()
    count = 0
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
        select(table).order_by(*order)
    )
    for row in result:
        digest.update(repr(tuple(map(_canonical, row))).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def checksums(catalog: Catalog) -> dict[str, tuple[int, str]]:
    with catalog.engine.connect() as conn:
        return {t.name: table_checksum(conn, t) for t in _tables()}


def _empty(conn: Connection) -> bool:
    return all(conn.execute(select(func.count()).select_from(t)).scalar() == 0 for t in _tables())


def _copy_in(conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> None:
    """PostgreSQL's COPY: about ten times the rows per second of batched INSERTs, in the
    same transaction. psycopg adapts each value; JSON columns are given as JSON text."""
    names = [c.name for c in table.columns]
    # As SQLAlchemy's own insert writes them: None is JSON null unless none_as_null.
    as_json = {c.name: c.type.none_as_null for c in table.columns if isinstance(c.type, JSON)}
    cols = ", ".join(f'"{n}"' for n in names)
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row[n])
                    if n in as_json and (row[n] is not None or not as_json[n])
                    else row[n]
                    for n in names
                ]
            )


def _reset_sequences(conn: Connection) -> None:
    """Ids continue after the copied ones (PostgreSQL's sequences do not follow inserts
    that give the id)."""
    if conn.dialect.name != "postgresql":
        return
    for table in _tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or pk[0].autoincrement not in (True, "auto") or pk[0].foreign_keys:
            continue
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:t, :c), "
                f'(SELECT max("{pk[0].name}") FROM "{table.name}")) '
                f'WHERE EXISTS (SELECT 1 FROM "{table.name}")'
            ),
            {"t": table.name, "c": pk[0].name},
        )


def copy_catalog(source: str, dest: str) -> list[TableCopy]:
    """Copy the catalog at `source` (path or URL) into `dest`, which must be new or empty.

    Returns per-table row counts and checksums of both sides (`TableCopy.same` says
    whether the destination reads back as the source); raises CopyError when the
    destination is not empty.
    """
    src_url = database_url(source)
    if is_sqlite(src_url):
        path = make_url(src_url).database
        if path and path != ":memory:" and not Path(path).is_file():
            raise CopyError(f"no catalog at {path}: nothing to copy")
    with open_catalog(source) as src, open_catalog(dest) as dst:
        if src.url == dst.url:
            raise CopyError("source and destination are the same catalog")
        with (
            _snapshot(src) as read,
            dst.engine.execution_options(curator_write=True).begin() as write,
        ):
            before = {t.name: table_checksum(read, t) for t in _tables()}
            if not _empty(write):
                raise CopyError(
                    "the destination catalog is not empty; copy into a new database or file "
                    "(nothing was changed)"
                )
            for table in _tables():
                if write.dialect.driver == "psycopg":
                    _copy_in(write, table, _rows(read, table))
                    continue
                batch: list[dict[str, Any]] = []
                for row in _rows(read, table):
                    batch.append(row)
                    if len(batch) >= BATCH:
                        write.execute(insert(table), batch)
                        batch = []
                if batch:
                    write.execute(insert(table), batch)
            _reset_sequences(write)
        # Statistics for the planner now, not whenever autovacuum comes by: the query
        # compiler writes tag ids into its SQL so that PostgreSQL can plan each tag by how
        # common it is, which only its statistics tell.
        with dst.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        after = checksums(dst)
    report = [TableCopy(name, *before[name], *after[name]) for name in (t.name for t in _tables())]
    return report


def _snapshot(catalog: Catalog) -> Connection:
    """A connection whose reads all see one state of the catalog, even while others write
    (SQLite's read transaction does; PostgreSQL needs REPEATABLE READ for it)."""
    if catalog.engine.dialect.name == "postgresql":
        return catalog.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    return catalog.engine.connect()
