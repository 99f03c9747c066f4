"""X/Y/Z plot axis values, expanded exactly as A1111's X/Y/Z plot script expands them.

Values are CSV (quotes protect commas), each stripped. On integer axes `a-b` is every
integer from a to b, `a-b (+s)` / `a-b (-s)` steps by s (the step needs its sign, and
the end is exclusive of b+1 whatever the direction, so `10-1 (-3)` is 10, 7, 4), and
`a-b [n]` is n evenly spaced values truncated to integers. On float axes `a-b (+s)` is
numpy's arange(a, b+s, s) and `a-b [n]` numpy's linspace. Anything else is taken as one
value and converted; a value that does not convert is an error.
"""

from __future__ import annotations

import csv
import re
from io import StringIO

import numpy as np

from curator.errors import CuratorError

# A1111's own patterns, including the unescaped "." in the float ones (any character).
_INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_FLOAT_RANGE = re.compile(
    r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*"
)
_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
_FLOAT_COUNT = re.compile(
    r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*"
)


class AxisValueError(CuratorError):
    """An X/Y/Z axis value that cannot be read."""


def split_values(text: str) -> list[str]:
    """CSV fields of `text`, stripped (A1111's `csv_string_to_list_strip`)."""
    return [field.strip() for row in csv.reader(StringIO(text)) for field in row]


def _int(text: str) -> int:
    return int(text.replace(" ", "")) if text.strip() else int(text)


def _float(text: str) -> float:
    return float(text.replace(" ", ""))


def expand(kind: type, text: str) -> list:
    """Expand an axis value string for an axis of type int, float or str."""
    values = split_values(text)
    expanded: list = []
    for value in values:
        if kind is int:
            ranged = _INT_RANGE.fullmatch(value)
            counted = _INT_COUNT.fullmatch(value)
            if ranged is not None:
                step = int(ranged.group(3)) if ranged.group(3) is not None else 1
                if step == 0:
                    raise AxisValueError(f"range step of 0 in {value!r}")
                start, end = _int(ranged.group(1)), _int(ranged.group(2)) + 1
                expanded += list(range(start, end, step))
                continue
            if counted is not None:
                count = int(counted.group(3)) if counted.group(3) is not None else 1
                points = np.linspace(_int(counted.group(1)), _int(counted.group(2)), count)
                expanded += [int(x) for x in points.tolist()]
                continue
        elif kind is float:
            ranged = _FLOAT_RANGE.fullmatch(value)
            counted = _FLOAT_COUNT.fullmatch(value)
            try:
                if ranged is not None:
                    step = _float(ranged.group(3)) if ranged.group(3) is not None else 1
                    start, end = _float(ranged.group(1)), _float(ranged.group(2))
                    if step == 0:
                        raise AxisValueError(f"range step of 0 in {value!r}")
                    expanded += np.arange(start, end + step, step).tolist()
                    continue
                if counted is not None:
                    count = int(counted.group(3)) if counted.group(3) is not None else 1
                    start, end = _float(counted.group(1)), _float(counted.group(2))
                    expanded += np.linspace(start, end, count).tolist()
                    continue
            except ValueError:
                raise AxisValueError(f"cannot read {value!r} as a number range") from None
        expanded.append(value)
    try:
        return [kind(v) for v in expanded]
    except ValueError:
        wanted = {int: "a whole number", float: "a number"}.get(kind, kind.__name__)
        bad = next(v for v in expanded if not _converts(kind, v))
        raise AxisValueError(f"axis value {bad!r} is not {wanted}") from None


def _converts(kind: type, value) -> bool:
    try:
        kind(value)
    except ValueError:
        return False
    return True
