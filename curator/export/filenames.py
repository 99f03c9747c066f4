"""Safe, portable file and folder names for exports.

Names in an export come from places a user does not fully control: original file
names, instance tokens, class words. `safe_name` turns any such text into one path
component that cannot climb out of the export folder and that Windows, macOS and
Linux all accept; `unique_names` gives every item of a set its own name, with
suffixes that depend on the item itself (not on the order or the rest of the set),
so the same image keeps the same name from one export to the next.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import TypeVar

from curator.errors import ExportError

# Reserved device names on Windows, with or without an extension ("CON.txt" too).
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
# Separators, characters Windows forbids, and glob metacharacters (sd-scripts finds
# images with glob patterns built from names, so `[` or `*` in a name breaks it).
_FORBIDDEN = frozenset('/\\<>:"|?*[]')
_UNDERSCORES = re.compile(r"_{2,}")
_SPACES = re.compile(r"\s+")
K = TypeVar("K", bound=Hashable)
DEFAULT_MAX_BYTES = 100  # leaves room for a suffix and extension under every 255-byte limit


def _clean_char(ch: str) -> str:
    if ch in _FORBIDDEN:
        return "_"
    category = unicodedata.category(ch)
    # Control, format (zero-width, bidi overrides), surrogate, private and unassigned.
    if category[0] == "C":
        return "_"
    if category in ("Zl", "Zp"):
        return " "
    return ch


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def is_reserved(name: str) -> bool:
    """True for names Windows reserves for devices (``CON``, ``com1.txt``, ``NUL.tar.gz``)."""
    return name.split(".", 1)[0].strip().upper() in _WINDOWS_RESERVED


def safe_name(text: str, *, max_bytes: int = DEFAULT_MAX_BYTES, fallback: str = "image") -> str:
    """One portable path component made from ``text``.

    NFC-normalised; separators, control and format characters, Windows-forbidden and
    glob characters become ``_``; whitespace runs become one space; leading and
    trailing dots, spaces and underscores are stripped (so ``..`` and ``.hidden``
    cannot appear); Windows device names get a ``_`` prefix; the result is cut to
    ``max_bytes`` of UTF-8. An empty result becomes ``fallback`` (itself made safe).
    """
    if max_bytes < 8:
        raise ExportError(f"a name needs at least 8 bytes, got {max_bytes}")
    name = unicodedata.normalize("NFC", text)
    name = "".join(_clean_char(ch) for ch in name)
    name = _SPACES.sub(" ", name)
    name = _UNDERSCORES.sub("_", name)
    name = name.strip(" ._")
    if is_reserved(name):
        name = "_" + name
    name = _truncate_utf8(name, max_bytes).rstrip(" .")
    if not name:
        if fallback == "":
            return ""
        return safe_name(fallback, max_bytes=max_bytes, fallback="image")
    return name


def safe_stem(filename: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A safe name from a file name without folder and extension (``a/My Cat.JPG`` → ``My Cat``)."""
    base = re.split(r"[/\\]", filename)[-1]
    stem, _ = os.path.splitext(base)
    return safe_name(stem or base, max_bytes=max_bytes)


def unique_names(
    bases: Mapping[K, str], suffix_for: Callable[[K], str], *, separator: str = "_"
) -> dict[K, str]:
    """Names for every key, unique ignoring case, stable whatever else is in the set.

    A key whose base is not shared keeps it; every key whose base is shared (compared
    case-insensitively, as Windows and macOS do) gets ``separator + suffix`` where the
    suffix is the start of ``suffix_for(key)`` (e.g. its content hash): 8 characters,
    more only while those still clash. So an image that collides today gets the same
    name tomorrow whichever other images come and go.
    """
    groups: dict[str, list[K]] = {}
    for key, base in bases.items():
        groups.setdefault(base.casefold(), []).append(key)
    names: dict[K, str] = {}
    for members in groups.values():
        if len(members) == 1:
            names[members[0]] = bases[members[0]]
            continue
        suffixes = {key: suffix_for(key) for key in members}
        longest = max(len(s) for s in suffixes.values())
        length = 8
        while length < longest and len({s[:length].casefold() for s in suffixes.values()}) < len(
            members
        ):
            length += 8
        for key in members:
            names[key] = f"{bases[key]}{separator}{suffixes[key][:length]}"
    # A suffixed name could equal another key's plain base ("a_1234abcd"): the one
    # with the later suffix then takes its whole suffix.
    seen: set[str] = set()
    for key in sorted(names, key=lambda k: (names[k].casefold(), suffix_for(k))):
        if names[key].casefold() in seen:
            names[key] = f"{names[key]}{separator}{suffix_for(key)}"
            if names[key].casefold() in seen:
                raise ExportError(f"cannot give {bases[key]!r} a name of its own")
        seen.add(names[key].casefold())
    return names


def safe_join(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts`` after checking that the result stays inside ``root``.

    Parts are expected to be made by `safe_name` already; this is the last line of
    defence against a name that would still climb out (an `ExportError` if so).
    """
    base = Path(root).resolve()
    for part in parts:
        for piece in re.split(r"[/\\]", part):
            if piece in ("", ".", "..") or os.path.isabs(piece):
                raise ExportError(f"unsafe path component {part!r}")
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise ExportError(f"path {path} would leave the export folder {base}")
    return path
