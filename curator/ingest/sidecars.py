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


class SidecarError(Exception):
    """A sidecar that cannot be imported; ``kind`` and ``message`` become a problem row."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


# C0 and C1 control characters except tab and newline, and U+FFFD (what undecodable
# bytes turn into): none belongs in a caption, and NUL ends C strings in trainers.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")


def clean_text(text: str) -> str:
    """Caption text without control characters or binary debris; line ends as ``\\n``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


def _decode(data: bytes) -> str:
    # Windows editors write UTF-16 with a byte-order mark, and UTF-8 with one.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    return data.decode("utf-8-sig", "replace")


def read_sidecar(path: str, max_bytes: int = MAX_SIDECAR_BYTES) -> str:
    """A sidecar's text, cleaned; raises `SidecarError` when it cannot be imported."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise SidecarError(
                "sidecar_too_large",
                f"caption sidecar is {size} bytes, over the {max_bytes}-byte limit; not imported",
            )
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise SidecarError("unreadable_sidecar", exc.strerror or str(exc)) from None
    return clean_text(_decode(data))


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
