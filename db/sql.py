"""SQL whose meaning differs between engines, written once so both agree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal


class like_ci(ColumnElement[bool]):  # noqa: N801 - used like a SQL function
    """`column LIKE pattern`, ignoring case on every engine.

    SQLite's LIKE ignores ASCII case; PostgreSQL's is case-sensitive, so there it is
    ILIKE. SQLite keeps its plain LIKE (and its speed); `.ilike()` would wrap both sides
    in lower() there."""

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("pattern", InternalTraversal.dp_clauseelement),
        ("escape", InternalTraversal.dp_string),
    ]

    def __init__(self, column: Any, pattern: str, escape: str | None = None):
        self.column = column
        self.pattern = literal(pattern)
        self.escape = escape


def _like(element: like_ci, compiler: Any, operator: str, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    sql = f"{column} {operator} {compiler.process(element.pattern, **kw)}"
    if element.escape is not None:
        sql += " ESCAPE " + compiler.render_literal_value(element.escape, element.pattern.type)
    return sql


@compiles(like_ci)
def _like_default(element: like_ci, compiler: Any, **kw: Any) -> str:
    return _like(element, compiler, "LIKE", **kw)


@compiles(like_ci, "postgresql")
def _like_postgresql(element: like_ci, compiler: Any, **kw: Any) -> str:
    return _like(element, compiler, "ILIKE", **kw)
