"""Turn an image's tags and caption into one training caption line.

Tag names are stored as models spell them (``long_hair``, ``hatsune_miku_(append)``);
`format_tag` makes them prompt-ready and `build_caption` orders, deduplicates,
shuffles and joins them. The rules are written out in `build_caption`'s docstring.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from curator.errors import UsageError

# Tags whose underscore is part of the face, not a word break: the list the WD14
# reference tagger (SmilingWolf's demo and the webui tagger extension) keeps as-is.
KAOMOJI: frozenset[str] = frozenset(
    {
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    }
)

Order = Literal["score", "alpha", "as-is"]
ORDERS: tuple[str, ...] = ("score", "alpha", "as-is")
CaptionPosition = Literal["first", "last"]

_UNESCAPED_PAREN = re.compile(r"(?<!\\)([()])")


_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """``text`` as one caption line: control characters out, white space runs as one space.

    Sidecars and model output can hold NUL, escape sequences or stray bytes; trainers
    read caption files as text lines, so tabs and line breaks become spaces and other
    control characters (Unicode category ``Cc``) are dropped.
    """
    chars = (
        " " if ch in "\t\n\r\v\f\x85" else "" if unicodedata.category(ch) == "Cc" else ch
        for ch in text
    )
    return _SPACES.sub(" ", "".join(chars)).strip()


def comparable(text: str) -> str:
    """A tag or caption piece compared across spellings: ``Short_Hair`` = ``short hair``."""
    text = text.replace("\\(", "(").replace("\\)", ")").replace("_", " ")
    return _SPACES.sub(" ", text).strip().casefold()


def escape_parentheses(text: str) -> str:
    r"""``(`` and ``)`` become ``\(`` and ``\)`` (already escaped ones are left alone).

    Prompt parsers (A1111, ComfyUI) read bare parentheses as emphasis.
    """
    return _UNESCAPED_PAREN.sub(r"\\\1", text)


def format_tag(name: str, *, underscores: bool = False, escape: bool = True) -> str:
    r"""A tag name as it should appear in a caption.

    Underscores become spaces unless ``underscores`` is true or the tag is a kaomoji
    (`KAOMOJI`: ``^_^`` stays ``^_^``); then parentheses are escaped unless ``escape``
    is false: ``hatsune_miku_(append)`` -> ``hatsune miku \(append\)``.
    """
    name = name.strip()
    if not underscores and name not in KAOMOJI:
        name = name.replace("_", " ")
    return escape_parentheses(name) if escape else name


def _tag_fields(tag: Any) -> tuple[str, str, float]:
    """(name, category, score) from a tuple or an object with those attributes."""
    if hasattr(tag, "name"):
        return str(tag.name), str(tag.category), float(tag.score)
    name, category, score = tag
    return str(name), str(category), float(score)


def _ordered(
    tags: Sequence[tuple[str, str, float]], order: str, formatted: dict[str, str]
) -> list[tuple[str, str, float]]:
    if order == "score":
        return sorted(tags, key=lambda t: (-t[2], formatted[t[0]].casefold()))
    if order == "alpha":
        return sorted(tags, key=lambda t: formatted[t[0]].casefold())
    return list(tags)


def build_caption(
    tags: Iterable[Any],
    *,
    caption: str | None = None,
    trigger: str | None = None,
    leading: Sequence[str] = (),
    class_word: str | None = None,
    include_rating: bool = False,
    include_meta: bool = False,
    characters_first: bool = True,
    keep_tokens: int = 0,
    keep_tokens_separator: str | None = "|||",
    shuffle: bool = False,
    seed: int | str | None = None,
    separator: str = ", ",
    order: Order = "score",
    caption_position: CaptionPosition = "first",
    underscores: bool = False,
    escape: bool = True,
    rating_prefix: str = "rating:",
) -> str:
    r"""One caption line from ``tags`` (``(name, category, score)`` tuples or `Tag`\ s).

    Tokens, in this order:

    1. the trigger word and class word as one token (``"sks dog"``), either may be
       absent; both are used verbatim (no underscore or parenthesis changes);
       then each of the ``leading`` words (e.g. trigger-word rules), also verbatim;
    2. ``caption`` (natural text, stripped) as one token when ``caption_position`` is
       ``"first"``;
    3. ``character`` tags, when ``characters_first``;
    4. every other tag: general, copyright, artist, unknown categories, and character
       tags when not ``characters_first``;
    5. ``caption`` when ``caption_position`` is ``"last"``;
    6. ``meta`` tags, only with ``include_meta``;
    7. one rating: the highest-scoring ``rating`` tag, only with ``include_rating``,
       written ``rating_prefix + name`` (``rating:general``) unless the name already
       starts with ``rating:``.

    Within groups 3, 4 and 6 tags are sorted by ``order``: ``"score"`` (highest
    first, ties by name), ``"alpha"`` (by formatted name) or ``"as-is"`` (input
    order). Tag names go through `format_tag` with ``underscores`` and ``escape``.
    Empty tokens are dropped and duplicates removed ignoring case; the first
    occurrence wins, so a tag equal to the trigger disappears.

    The first ``keep_tokens`` tokens stay in front (kohya's ``--keep_tokens``). With
    ``shuffle`` the remaining tokens are shuffled by ``random.Random(seed)``: the same
    seed gives the same caption (``seed=None`` differs each call). When
    ``keep_tokens > 0``, ``keep_tokens_separator`` is set and tokens remain after the
    kept ones, the kept part and the rest are joined by `` ||| `` (that separator with
    a space either side), kohya's ``keep_tokens_separator`` syntax; pass
    ``keep_tokens_separator=None`` to join everything with ``separator``.
    """
    if keep_tokens < 0:
        raise UsageError(f"keep_tokens must be 0 or more, got {keep_tokens}")
    if order not in ORDERS:
        raise UsageError(f"unknown tag order {order!r} (known: {', '.join(ORDERS)})")
    if caption_position not in ("first", "last"):
        raise UsageError(f"caption position must be 'first' or 'last', got {caption_position!r}")

    fields = [_tag_fields(tag) for tag in tags]
    formatted = {
        name: format_tag(name, underscores=underscores, escape=escape) for name, _, _ in fields
    }
    characters: list[tuple[str, str, float]] = []
    others: list[tuple[str, str, float]] = []
    meta: list[tuple[str, str, float]] = []
    ratings: list[tuple[str, str, float]] = []
    for tag in fields:
        category = tag[1]
        if category == "rating":
            ratings.append(tag)
        elif category == "meta":
            meta.append(tag)
        elif category == "character" and characters_first:
            characters.append(tag)
        else:
            others.append(tag)

    text = caption.strip() if caption else ""
    tokens = [" ".join(word.strip() for word in (trigger, class_word) if word and word.strip())]
    tokens.extend(word.strip() for word in leading)
    if caption_position == "first":
        tokens.append(text)
    for group in (characters, others):
        tokens.extend(formatted[name] for name, _, _ in _ordered(group, order, formatted))
    if caption_position == "last":
        tokens.append(text)
    if include_meta:
        tokens.extend(formatted[name] for name, _, _ in _ordered(meta, order, formatted))
    if include_rating and ratings:
        name = max(ratings, key=lambda t: t[2])[0]
        tokens.append(name if name.startswith("rating:") else rating_prefix + formatted[name])

    unique: list[str] = []
    seen: set[str] = set()
    for token in tokens:
        key = token.casefold()
        if token and key not in seen:
            seen.add(key)
            unique.append(token)

    kept, rest = unique[:keep_tokens], unique[keep_tokens:]
    if shuffle:
        random.Random(seed).shuffle(rest)
    if kept and rest and keep_tokens_separator:
        return f"{separator.join(kept)} {keep_tokens_separator} {separator.join(rest)}"
    return separator.join(kept + rest)
