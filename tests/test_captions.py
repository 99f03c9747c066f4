"""Caption formatting: tag spelling, ordering, trigger, keep tokens, shuffle, toggles."""

from __future__ import annotations

from typing import Any

import pytest

from curator.errors import UsageError
from curator.export.captions import KAOMOJI, build_caption, escape_parentheses, format_tag
from taggers.base import Tag


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("long_hair", "long hair"),
        ("1girl", "1girl"),
        ("hatsune_miku_(append)", r"hatsune miku \(append\)"),
        ("star_(symbol)", r"star \(symbol\)"),
        ("^_^", "^_^"),
        (">_<", ">_<"),
        ("o_o", "o_o"),
        ("0_0", "0_0"),
        ("+_+", "+_+"),
        ("u_u", "u_u"),
        ("x_x", "x_x"),
        ("|_|", "|_|"),
        ("||_||", "||_||"),
        ("=_=", "=_="),
        ("<|>_<|>", "<|>_<|>"),
        ("(o)_(o)", r"\(o\)_\(o\)"),
        ("><", "><"),
        (":d", ":d"),
        ("already_\\(escaped\\)", r"already \(escaped\)"),
        ("  padded_tag ", "padded tag"),
        ("a_b_c", "a b c"),
    ],
)
def test_format_tag(name: str, expected: str) -> None:
    assert format_tag(name) == expected


def test_format_tag_options() -> None:
    assert format_tag("hatsune_miku_(append)", underscores=True) == r"hatsune_miku_\(append\)"
    assert format_tag("hatsune_miku_(append)", escape=False) == "hatsune miku (append)"
    assert escape_parentheses("a (b) \\(c\\)") == r"a \(b\) \(c\)"


def test_kaomoji_list_is_the_wd14_list() -> None:
    assert {"^_^", ">_<", "o_o", "0_0", "(o)_(o)", "+_+", "u_u", "x_x", "|_|", "||_||"} <= KAOMOJI
    assert {"=_=", "<|>_<|>", "@_@", "3_3", "6_9", "._.", "<o>_<o>", "+_-", ">_o"} <= KAOMOJI
    assert all("_" in k for k in KAOMOJI)


TAGS = [
    ("long_hair", "general", 0.90),
    ("1girl", "general", 0.99),
    ("hatsune_miku", "character", 0.95),
    ("smile", "general", 0.50),
    ("^_^", "general", 0.40),
    ("vocaloid", "copyright", 0.80),
    ("highres", "meta", 0.70),
    ("general", "rating", 0.60),
    ("sensitive", "rating", 0.30),
]

CASES: list[tuple[str, list[Any], dict[str, Any], str]] = [
    ("empty", [], {}, ""),
    (
        "score order, characters first, no meta or rating",
        TAGS,
        {},
        "hatsune miku, 1girl, long hair, vocaloid, smile, ^_^",
    ),
    (
        "characters mixed in",
        TAGS,
        {"characters_first": False},
        "1girl, hatsune miku, long hair, vocaloid, smile, ^_^",
    ),
    (
        "alphabetical",
        TAGS,
        {"order": "alpha"},
        "hatsune miku, 1girl, ^_^, long hair, smile, vocaloid",
    ),
    (
        "as given",
        TAGS,
        {"order": "as-is"},
        "hatsune miku, long hair, 1girl, smile, ^_^, vocaloid",
    ),
    (
        "trigger first",
        TAGS[:3],
        {"trigger": "mkstyle"},
        "mkstyle, hatsune miku, 1girl, long hair",
    ),
    (
        "trigger and class word make one token",
        [("dog", "general", 0.9), ("grass", "general", 0.8)],
        {"trigger": "sks", "class_word": "dog"},
        "sks dog, dog, grass",
    ),
    (
        "class word alone",
        [("grass", "general", 0.8)],
        {"class_word": "dog"},
        "dog, grass",
    ),
    (
        "trigger kept verbatim",
        [],
        {"trigger": "ohwx_(v2)"},
        "ohwx_(v2)",
    ),
    (
        "rating on",
        TAGS[:2] + TAGS[7:],
        {"include_rating": True},
        "1girl, long hair, rating:general",
    ),
    (
        "rating with own prefix",
        [("rating:safe", "rating", 0.9), ("cat", "general", 0.9)],
        {"include_rating": True},
        "cat, rating:safe",
    ),
    (
        "rating with custom prefix",
        [("explicit", "rating", 0.9)],
        {"include_rating": True, "rating_prefix": ""},
        "explicit",
    ),
    (
        "meta on",
        TAGS[:2] + [TAGS[6]],
        {"include_meta": True},
        "1girl, long hair, highres",
    ),
    (
        "meta and rating order",
        TAGS,
        {"include_meta": True, "include_rating": True, "trigger": "t"},
        "t, hatsune miku, 1girl, long hair, vocaloid, smile, ^_^, highres, rating:general",
    ),
    (
        "caption first",
        TAGS[:2],
        {"caption": "  A girl with long hair. ", "trigger": "t"},
        "t, A girl with long hair., 1girl, long hair",
    ),
    (
        "caption last",
        TAGS[:2],
        {"caption": "A girl.", "caption_position": "last", "include_rating": True},
        "1girl, long hair, A girl.",
    ),
    (
        "caption alone",
        [],
        {"caption": "a photo of a cat"},
        "a photo of a cat",
    ),
    (
        "duplicates removed ignoring case, first wins",
        [("Cat", "general", 0.5), ("cat", "general", 0.9), ("blue_sky", "general", 0.1)],
        {"trigger": "Blue Sky"},
        "Blue Sky, cat",
    ),
    (
        "underscore and space spellings are duplicates",
        [("long_hair", "general", 0.9), ("long hair", "general", 0.5)],
        {},
        "long hair",
    ),
    (
        "parentheses escaped",
        [("hatsune_miku_(append)", "character", 0.9), ("(o)_(o)", "general", 0.5)],
        {},
        r"hatsune miku \(append\), \(o\)_\(o\)",
    ),
    (
        "no escaping, underscores kept",
        [("hatsune_miku_(append)", "character", 0.9), ("long_hair", "general", 0.5)],
        {"escape": False, "underscores": True},
        "hatsune_miku_(append), long_hair",
    ),
    (
        "custom separator",
        TAGS[:3],
        {"separator": ","},
        "hatsune miku,1girl,long hair",
    ),
    (
        "keep tokens with separator",
        TAGS[:3],
        {"trigger": "t", "keep_tokens": 2},
        "t, hatsune miku ||| 1girl, long hair",
    ),
    (
        "keep tokens, plain",
        TAGS[:3],
        {"trigger": "t", "keep_tokens": 2, "keep_tokens_separator": None},
        "t, hatsune miku, 1girl, long hair",
    ),
    (
        "keep tokens, custom separator",
        TAGS[:3],
        {"keep_tokens": 1, "keep_tokens_separator": "###"},
        "hatsune miku ### 1girl, long hair",
    ),
    (
        "keep more tokens than there are",
        TAGS[:2],
        {"keep_tokens": 5},
        "1girl, long hair",
    ),
    (
        "Tag objects",
        [Tag("long_hair", "general", 0.3), Tag("rei", "character", 0.9)],
        {},
        "rei, long hair",
    ),
]


@pytest.mark.parametrize(
    ("tags", "options", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_build_caption(tags: list[Any], options: dict[str, Any], expected: str) -> None:
    assert build_caption(tags, **options) == expected


MANY = [(f"tag_{i}", "general", 1 - i / 100) for i in range(30)]


def test_shuffle_is_deterministic_with_a_seed() -> None:
    first = build_caption(MANY, trigger="t", keep_tokens=1, shuffle=True, seed=123)
    assert first == build_caption(MANY, trigger="t", keep_tokens=1, shuffle=True, seed=123)
    assert first != build_caption(MANY, trigger="t", keep_tokens=1, shuffle=True, seed=124)
    assert first == build_caption(MANY, trigger="t", keep_tokens=1, shuffle=True, seed=123)


def test_shuffle_keeps_the_kept_tokens_and_every_token() -> None:
    plain = build_caption(MANY, trigger="t", keep_tokens_separator=None)
    for seed in range(20):
        shuffled = build_caption(
            MANY, trigger="t", keep_tokens=3, keep_tokens_separator=None, shuffle=True, seed=seed
        )
        tokens = shuffled.split(", ")
        assert tokens[:3] == plain.split(", ")[:3]
        assert sorted(tokens) == sorted(plain.split(", "))
        assert tokens != plain.split(", ")


def test_shuffle_with_separator_only_moves_the_rest() -> None:
    caption = build_caption(MANY, trigger="t", keep_tokens=1, shuffle=True, seed="sha")
    kept, rest = caption.split(" ||| ")
    assert kept == "t"
    assert sorted(rest.split(", ")) == sorted(f"tag {i}" for i in range(30))


def test_string_seeds_are_stable() -> None:
    # Per-image seeds are often content hashes; a str seed must not depend on PYTHONHASHSEED.
    caption = build_caption(MANY[:6], shuffle=True, seed="image-sha")
    assert caption == "tag 2, tag 3, tag 0, tag 4, tag 1, tag 5"


@pytest.mark.parametrize(
    "options",
    [{"keep_tokens": -1}, {"order": "random"}, {"caption_position": "middle"}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        build_caption(TAGS, **options)
