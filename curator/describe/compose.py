"""One or two plain sentences a screen reader can speak, from what the catalog knows."""

from __future__ import annotations

from dataclasses import dataclass, field

from curator.describe.words import (
    NUMBERS,
    character_words,
    content_words,
    is_content,
    tag_words,
)

LENGTHS = ("short", "long")
TAG_COUNT = {"short": 4, "long": 10}
OCR_CHARS = {"short": 120, "long": 400}


@dataclass(slots=True)
class Facts:
    """What is known about one image."""

    caption: str | None = None
    tags: list[tuple[str, str, float]] = field(default_factory=list)  # name, category, score
    texts: list[str] = field(default_factory=list)  # OCR, in reading order
    faces: int | None = None  # None: faces were not looked for


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _strongest_new_ideas(facts: Facts, count: int) -> tuple[list[str], list[str]]:
    """(general phrases, character names) that the caption does not already say."""
    seen = content_words(facts.caption or "")
    ordered = sorted(facts.tags, key=lambda t: -t[2])
    characters = [character_words(n) for n, c, _ in ordered if c == "character"]
    general = [(tag_words(n), s) for n, c, s in ordered if c != "character" and is_content(n, c)][
        : count * 3
    ]
    # Longer phrases first, so "long hair" is kept and then "hair" is a repeat.
    kept: list[tuple[str, float]] = []
    for phrase, score in sorted(general, key=lambda p: -len(content_words(p[0]))):
        words = content_words(phrase)
        if words and not words <= seen:
            kept.append((phrase, score))
            seen |= words
    kept.sort(key=lambda p: -p[1])
    return [p for p, _ in kept[:count]], list(dict.fromkeys(characters))[:3]


def describe(facts: Facts, length: str = "short") -> str:
    """The description: caption and new ideas from tags, then OCR text and faces."""
    if length not in LENGTHS:
        raise ValueError(f"length is short or long, not {length!r}")
    phrases, characters = _strongest_new_ideas(facts, TAG_COUNT[length])
    parts: list[str] = []
    if facts.caption and facts.caption.strip():
        parts.append(_sentence(facts.caption))
        if phrases:
            parts.append(_sentence(f"It shows {_join(phrases)}"))
    elif phrases:
        parts.append(_sentence(f"An image showing {_join(phrases)}"))
    if characters:
        verb = "character is" if len(characters) == 1 else "characters are"
        parts.append(_sentence(f"The {verb} {_join(characters)}"))
    text = " ".join(" ".join(t.split()) for t in facts.texts if t.strip())
    if text:
        limit = OCR_CHARS[length]
        if len(text) > limit:
            text = text[:limit].rsplit(" ", 1)[0] + "…"
        parts.append(f"The image contains the text: “{text}”.")
    if facts.faces:
        if facts.faces == 1:
            parts.append("One face is visible.")
        else:
            n = NUMBERS[facts.faces] if facts.faces < len(NUMBERS) else str(facts.faces)
            parts.append(_sentence(f"{n} faces are visible"))
    if not parts:
        return "No description is available: the image has no caption or tags yet."
    return " ".join(parts)
