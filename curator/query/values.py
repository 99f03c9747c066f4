"""Reading a term's value: numbers, sizes, ratios, ratings and named choices.

Every number a query binds fits SQLite's 64-bit integer or is a finite float: an
integer past 64 bits is compared as a float (`width>=99999999999999999999` matches
nothing, as it should), and `nan` or `inf` are refused.
"""

from __future__ import annotations

import math
import re

from curator.errors import QueryError
from curator.query.parser import Value
from curator.tags.view import RATINGS

INT64_MAX = 2**63 - 1
_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(k|m|g|t)?(i)?(b)?$", re.IGNORECASE)
_RATIO = re.compile(r"^(\d+(?:\.\d*)?)\s*[:/]\s*(\d+(?:\.\d*)?)$")


def bounded(number: float, text: str = "") -> int | float:
    """An integer when it is one that fits 64 bits (and was not written with a point)."""
    if number.is_integer() and "." not in text and abs(number) <= INT64_MAX:
        return int(number)
    return number


def number(value: Value, op: str) -> int | float:
    text = value.text.strip()
    try:
        parsed = float(text)
    except ValueError:
        raise QueryError(f"expected a number after '{op}'", column=value.column) from None
    if not math.isfinite(parsed):
        raise QueryError(f"expected a finite number after '{op}'", column=value.column)
    return bounded(parsed, text)


def size(value: Value, op: str) -> int | float:
    """`2MB`, `500KB`, `1.5GiB`, `123`: a byte count."""
    match = _SIZE.match(value.text.strip())
    if not match:
        raise QueryError(f"expected a size after '{op}' (e.g. 500KB, 2MB)", column=value.column)
    digits, unit, binary, _ = match.groups()
    power = "kmgt".index(unit.lower()) + 1 if unit else 0
    total = float(digits) * (1024 if binary else 1000) ** power
    if not math.isfinite(total):
        raise QueryError(f"expected a finite size after '{op}'", column=value.column)
    return bounded(float(round(total)))


def ratio(value: Value, op: str) -> float:
    """`1.5`, `16:9`, `4/3`: width / height."""
    if match := _RATIO.match(value.text.strip()):
        width, height = float(match[1]), float(match[2])
        if height == 0:
            raise QueryError("an aspect ratio cannot have height 0", column=value.column)
        if not (math.isfinite(width) and math.isfinite(height)):
            raise QueryError("expected a finite aspect ratio", column=value.column)
        return width / height
    return float(number(value, op))


def shown(text: str, limit: int = 40) -> str:
    """Query text quoted in an error: one line, control characters escaped, cut when long."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] == ".")


def rating_index(value: Value) -> int:
    text = value.text.lower()
    for index, name in enumerate(RATINGS):
        if text in (name, name[0]):
            return index
    raise QueryError(
        f"unknown rating '{shown(value.text)}' ({', '.join(RATINGS)})", column=value.column
    )


def choice(value: Value, choices: tuple[str, ...], what: str) -> str:
    text = value.text.lower()
    if text not in choices:
        raise QueryError(
            f"unknown {what} '{shown(value.text)}' ({', '.join(choices)})", value.column
        )
    return text
