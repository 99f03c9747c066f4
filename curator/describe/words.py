"""Booru tags read aloud: `long_hair` → "long hair", `2girls` → "two girls"."""

from __future__ import annotations

import re

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# `2girls`, `1boy`, `6+girls`, `1other`
_COUNT = re.compile(r"^(\d)(\+?)(girl|boy|other)s?$")
_QUALIFIER = re.compile(r"_\(([^)]*)\)$")
# Tags about the file or its popularity, not about what the image shows.
_NOT_CONTENT = re.compile(
    r"^(score_\d+(_up)?|masterpiece|(best|high|normal|low|worst|bad)_quality|absurdres|"
    r"highres|lowres|incredibly_absurdres|official_art|commentary(_request)?|.*_commentary|"
    r"translation_request|translated|watermark|signature|artist_name|web_address|"
    r"dated|username|jpeg_artifacts|source_.*|rating_.*|solo|solo_focus)$"
)
SKIP_CATEGORIES = frozenset({"rating", "meta", "artist"})
STOPWORDS = frozenset(
    "a an the of on in with and or to at by for from is are its it this that more".split()
)


def is_content(name: str, category: str) -> bool:
    """Whether a tag says something about what is shown (no ratings, meta or scores)."""
    return category not in SKIP_CATEGORIES and not _NOT_CONTENT.match(name.lower())


def tag_words(name: str) -> str:
    """A tag as plain words for a listener."""
    name = name.strip().lower()
    match = _COUNT.match(name)
    if match:
        n, plus, noun = int(match.group(1)), match.group(2), match.group(3)
        noun = "people" if noun == "other" and (n != 1 or plus) else noun
        noun = noun if noun == "people" or (n == 1 and not plus) else noun + "s"
        number = NUMBERS[n] + (" or more" if plus else "")
        return f"{number} {'person' if noun == 'other' else noun}"
    name = _QUALIFIER.sub("", name)
    return " ".join(name.replace("_", " ").split())


def character_words(name: str) -> str:
    """A character tag as a name: `hatsune_miku_(vocaloid)` → "Hatsune Miku"."""
    words = tag_words(name).split()
    return " ".join(w[:1].upper() + w[1:] for w in words)


def _stem(word: str) -> str:
    """Crude stemming, enough to hear "smile" and "smiling" as one idea."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def content_words(text: str) -> set[str]:
    """The words that carry an idea, stemmed, for spotting repeats.

    Number words are left out: "one girl" says nothing "a girl" does not.
    """
    return {
        _stem(word)
        for word in re.findall(r"[a-z0-9]+", text.lower())
        if word not in STOPWORDS and word not in NUMBERS and not word.isdigit()
    }
