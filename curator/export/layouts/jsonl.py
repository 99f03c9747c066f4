"""A plain JSON Lines manifest: one row per image, for custom training code.

``dataset.jsonl`` rows: ``file_name`` (relative to the export folder), ``caption``,
``tags``, ``width``, ``height``, ``role`` (``train`` or ``reg``) and
``source_sha256`` (the catalog image it was made from).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from curator.export.layouts.base import (
    REG,
    Layout,
    LayoutItem,
    LayoutSettings,
    jsonl_text,
    sorted_items,
    write_text,
)

MANIFEST_NAME = "dataset.jsonl"


class JsonLines(Layout):
    name = "jsonl"
    supports_reg = True

    def folder(self, role: str, settings: LayoutSettings) -> str:
        return "reg" if role == REG else "images"

    def write(self, root: Path, items: Sequence[LayoutItem], settings: LayoutSettings) -> list[str]:
        rows = [
            {
                "file_name": settings.ref(item.path),
                "caption": item.caption,
                "tags": list(item.tags),
                "width": item.bucket[0],
                "height": item.bucket[1],
                "role": item.role,
                "source_sha256": item.source_sha256,
            }
            for item in sorted_items(items)
        ]
        return [write_text(root, MANIFEST_NAME, jsonl_text(rows))]
