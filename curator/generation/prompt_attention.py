"""A1111's attention syntax: `(x)`, `[x]`, `(x:1.3)`, escapes and `BREAK`.

`parse_prompt_attention` returns the same (text, weight) list as A1111's function of the
same name on every input it accepts, quirks included:

- weights are unrounded products, multiplied in the order brackets close (unclosed round
  brackets are applied first, then unclosed square ones);
- a `\\` before anything but `( ) [ ] \\` is dropped;
- `(a:1.2:3)` reads `a:1.2` weighted 3; `:1.2)` with no open `(` is plain text;
- `BREAK` outside brackets is an entry ("BREAK", -1); inside brackets its weight is scaled
  like any other entry, so it no longer acts as a break;
- neighbouring entries of equal weight are merged (two BREAKs included).

A weight A1111 cannot read (`(a:1.2.3)`, where A1111 fails with a ValueError) raises
`PromptSyntaxError` here.
"""

from __future__ import annotations

import re

from curator.errors import CuratorError

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_WEIGHT = -1.0

_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_SPECIAL = "\\()[]:"
# A weight is ":" then signs, digits and dots up to a ")" (A1111 lets float() judge it).
_WEIGHT = re.compile(r":([+-]?[.\d]+)\)")


class PromptSyntaxError(CuratorError):
    """A prompt that A1111 itself cannot read."""


def _tokens(text: str):
    """Yield (kind, value) in A1111's token order: escape, open, weight, close, text."""
    pos, end = 0, len(text)
    while pos < end:
        char = text[pos]
        if char == "\\":
            nxt = text[pos + 1 : pos + 2]
            if nxt and nxt in "()[]\\":
                yield "literal", nxt
                pos += 2
            else:  # a lone backslash: A1111 keeps nothing of it
                yield "literal", ""
                pos += 1
        elif char in "([":
            yield "open", char
            pos += 1
        elif char == ":":
            weight = _WEIGHT.match(text, pos)
            if weight is not None:
                yield "weight", weight.group(0)
                pos = weight.end()
            else:
                yield "text", ":"
                pos += 1
        elif char in ")]":
            yield "close", char
            pos += 1
        else:
            stop = pos
            while stop < end and text[stop] not in _SPECIAL:
                stop += 1
            yield "text", text[pos:stop]
            pos = stop


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs as A1111 does; ("BREAK", -1) marks a break."""
    parts: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for kind, value in _tokens(text):
        if kind == "literal":
            parts.append([value, 1.0])
        elif kind == "open":
            (round_open if value == "(" else square_open).append(len(parts))
        elif kind == "weight" and round_open:
            number = value[1:-1]
            try:
                factor = float(number)
            except ValueError:
                raise PromptSyntaxError(f"invalid attention weight {number!r}") from None
            scale(round_open.pop(), factor)
        elif value == ")" and round_open:
            scale(round_open.pop(), ROUND_MULTIPLIER)
        elif value == "]" and square_open:
            scale(square_open.pop(), SQUARE_MULTIPLIER)
        else:  # text, or a bracket/weight with nothing open: plain text
            for index, piece in enumerate(_BREAK.split(value)):
                if index:
                    parts.append(["BREAK", BREAK_WEIGHT])
                parts.append([piece, 1.0])

    for start in round_open:
        scale(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale(start, SQUARE_MULTIPLIER)
    if not parts:
        parts = [["", 1.0]]

    merged: list[list] = [parts[0]]
    for part in parts[1:]:
        if part[1] == merged[-1][1]:
            merged[-1][0] += part[0]
        else:
            merged.append(part)
    return [(text_, weight) for text_, weight in merged]
