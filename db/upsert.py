"""Writes that stay correct with several writers on a server database.

SQLite serialises writers with `BEGIN IMMEDIATE`, so "look, then insert" is safe there.
On PostgreSQL two machines can both look, both miss and both insert: the second then
fails on a unique key and loses its whole batch. These helpers let the database decide
(`INSERT ... ON CONFLICT`) or make the second writer wait its turn on a row lock.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, and_, delete, insert, or_, select
from sqlalchemy.orm import Session

# Bound parameters per IN (...) list: well under SQLite's 32766 and PostgreSQL's 65535.
IN_CHUNK = 5000


def dialect_of(s: Session) -> str:
    return s.get_bind().dialect.name


def _insert_for(s: Session, table: Table):  # noqa: ANN202
    dialect = dialect_of(s)
    if dialect in ("sqlite", "postgresql"):
        return importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(table)
    return None


def insert_ignore(
    s: Session, table: Table, rows: list[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert `rows`, skipping those whose `keys` already exist (or are being inserted by
    another transaction, which this one then waits for)."""
    if not rows:
        return
    stmt = _insert_for(s, table)
    if stmt is None:
        s.execute(insert(table), rows)
        return
    s.execute(stmt.on_conflict_do_nothing(index_elements=list(keys)), rows)


def upsert(
    s: Session, table: Table, rows: list[dict[str, Any]], keys: Sequence[str], update: Sequence[str]
) -> None:
    """Insert `rows`, replacing the `update` columns of rows whose `keys` already exist."""
    if not rows:
        return
    unique = list({tuple(r[k] for k in keys): r for r in rows}.values())
    stmt = _insert_for(s, table)
    if stmt is not None:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
        )
        s.execute(stmt, unique)
        return
    # Other databases: delete the keys, then insert (still a bounded number of statements).
    for i in range(0, len(unique), 500):
        chunk = unique[i : i + 500]
        s.execute(
            delete(table).where(or_(*(and_(*(table.c[k] == r[k] for k in keys)) for r in chunk)))
        )
    s.execute(insert(table), unique)


def lock_rows(s: Session, table: Table, ids: Iterable[int]) -> None:
    """Take row locks on `table`'s rows with these ids until the transaction ends, in id
    order (so two writers never wait on each other in a cycle). SQLite's write
    transaction already holds the whole database: nothing to do there."""
    if dialect_of(s) == "sqlite":
        return
    wanted = sorted(set(ids))
    pk = table.primary_key.columns.values()[0]
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        s.execute(select(pk).where(pk.in_(chunk)).order_by(pk).with_for_update()).all()


def insert_new(s: Session, table: Table, row: dict[str, Any], keys: Sequence[str]) -> Any | None:
    """Insert one row unless its `keys` exist: its primary key if this call inserted it,
    else None (the row is there, perhaps just written by another machine)."""
    stmt = _insert_for(s, table)
    pk = table.primary_key.columns.values()[0]
    if stmt is None:
        exists = s.execute(select(pk).where(*(table.c[k] == row[k] for k in keys)).limit(1)).first()
        return None if exists else s.execute(insert(table).values(row).returning(pk)).scalar()
    stmt = stmt.values(row).on_conflict_do_nothing(index_elements=list(keys)).returning(pk)
    return s.execute(stmt).scalar()
