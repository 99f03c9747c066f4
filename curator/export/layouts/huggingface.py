"""Hugging Face ``imagefolder``: ``train/`` with images and a ``metadata.jsonl``.

``datasets.load_dataset("imagefolder", data_dir=EXPORT)`` gives a ``train`` split with
an ``image`` column and the row's other keys as columns: ``text`` (the caption line)
and ``tags`` (the tag names, as stored in the catalog). This is also what diffusers'
``train_text_to_image*.py`` read with ``--train_data_dir EXPORT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from curator.export.layouts.base import (
    TRAIN,
    Layout,
    LayoutItem,
    LayoutSettings,
    jsonl_text,
    sorted_items,
    write_text,
)

FOLDER = "train"


class ImageFolder(Layout):
    name = "imagefolder"

    def folder(self, role: str, settings: LayoutSettings) -> str:
        return FOLDER

    def write(self, root: Path, items: Sequence[LayoutItem], settings: LayoutSettings) -> list[str]:
        rows = [
            {"file_name": item.file_name, "text": item.caption, "tags": list(item.tags)}
            for item in sorted_items(items, TRAIN)
        ]
        return [write_text(root, f"{FOLDER}/metadata.jsonl", jsonl_text(rows))]
