"""Selecting images with a query string, compiled to one SQLAlchemy expression.

This first version knows metadata terms: `folder:PATH`, `format:png`, and
comparisons on `width`, `height`, `bytes`. Terms are ANDed.
"""

from __future__ import annotations

import os
import re
import shlex

from sqlalchemy import ColumnElement, Select, and_, exists, select, true
from sqlalchemy.orm import aliased

from curator.errors import QueryError
from db.schema import File, Image

_COMPARE = re.compile(r"^(width|height|bytes)(>=|<=|!=|=|>|<)(\d+)$")
_OPS = {
    ">=": lambda c, v: c >= v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    "<": lambda c, v: c < v,
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
}


def folder_condition(folder: str, *, base: str | None = None) -> ColumnElement[bool]:
    """Images with a present file in `folder` or below (relative to `base` or cwd)."""
    path = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(folder)))
    prefix = path.rstrip(os.sep) + os.sep
    f = aliased(File)  # its own alias, so it never correlates with a File in the outer query
    return exists().where(
        f.image_id == Image.id,
        f.present.is_(True),
        (f.folder == path.rstrip(os.sep)) | f.folder.startswith(prefix, autoescape=True),
    )


def compile_query(text: str | None) -> ColumnElement[bool]:
    """A boolean expression over `Image` for a query string ('' selects everything)."""
    if not text or not text.strip():
        return true()
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise QueryError(f"cannot parse query: {exc}", column=len(text)) from None
    conditions: list[ColumnElement[bool]] = []
    offset = 0
    for term in terms:
        column = text.find(term, offset) + 1
        offset = max(column, offset)
        key, sep, value = term.partition(":")
        if sep and key == "folder":
            conditions.append(folder_condition(value))
        elif sep and key == "format":
            fmt = value.upper().replace("JPG", "JPEG")
            conditions.append(Image.format == fmt)
        elif m := _COMPARE.match(term):
            col = {"width": Image.width, "height": Image.height, "bytes": Image.bytes}[m[1]]
            conditions.append(_OPS[m[2]](col, int(m[3])))
        else:
            raise QueryError(f"unknown query term {term!r}", column=column)
    return and_(*conditions)


def select_images(text: str | None = None) -> Select:
    """`SELECT images.* WHERE <query>` ordered by id."""
    return select(Image).where(compile_query(text)).order_by(Image.id)
