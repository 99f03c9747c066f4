"""Caption sidecars that other tools leave beside images (`a.png` → `a.txt`, `a.caption`)."""

from __future__ import annotations

import os
import re

SIDECAR_EXTENSIONS = (".txt", ".caption")
MAX_SIDECAR_BYTES = 1 << 20
_WORDS_IN_A_TAG = 6  # a comma-free piece longer than this is prose, not a tag


def sidecar_paths(image_path: str, names_in_folder: set[str]) -> list[str]:
    """Sidecars of an image among the file names of its folder."""
    folder, name = os.path.split(image_path)
    stem = os.path.splitext(name)[0]
    return [
        os.path.join(folder, stem + ext)
        for ext in SIDECAR_EXTENSIONS
        if stem + ext in names_in_folder
    ]


def read_sidecar(path: str) -> str | None:
    try:
        if os.path.getsize(path) > MAX_SIDECAR_BYTES:
            return None
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return None


def parse_sidecar_tags(text: str) -> list[str]:
    """Comma-separated tags as trainers write them, back to booru spelling.

    `long hair, \\(cosplay\\)` → `long_hair`, `(cosplay)`. Weighting syntax like
    `(tag:1.2)` is kept literally; pieces that read as sentences are skipped (they
    stay in the sidecar caption).
    """
    tags: list[str] = []
    for piece in re.split(r",|\n", text):
        piece = piece.strip()
        if not piece or len(piece.split()) > _WORDS_IN_A_TAG or piece.endswith("."):
            continue
        piece = piece.replace("\\(", "(").replace("\\)", ")")
        tag = re.sub(r"\s+", "_", piece)
        if tag not in tags:
            tags.append(tag)
    return tags
