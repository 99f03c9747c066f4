"""Export layouts: where images go and which metadata files trainers read beside them.

A layout is a small object with one job: given the rendered items of an export, name
their folders and write the files a trainer expects (sidecars, TOML, JSON, JSONL).
The export itself (selection, buckets, crops, rendering, the manifest) is the same
for every layout; see `curator.export`.

* ``kohya-dreambooth``: sd-scripts DreamBooth folders ``img/{repeats}_{instance} {class}/``
  and ``reg/{repeats}_{class}/`` with caption sidecars, plus ``dataset.toml``;
* ``kohya-finetune``: sd-scripts fine-tuning, ``train/`` + ``meta_cap.json`` + ``dataset.toml``;
* ``diffusers-dreambooth``: ``instance_images/``, ``class_images/``, prompts and captions
  for diffusers' ``train_dreambooth*.py``;
* ``imagefolder``: Hugging Face ``datasets``, ``train/`` with ``metadata.jsonl``;
* ``jsonl``: anything else, ``images/`` (and ``reg/``) with one JSON row per image.
"""

from __future__ import annotations

from curator.errors import UsageError
from curator.export.layouts.base import REG, TRAIN, Layout, LayoutItem, LayoutSettings
from curator.export.layouts.diffusers import DiffusersDreamBooth
from curator.export.layouts.huggingface import ImageFolder
from curator.export.layouts.jsonl import JsonLines
from curator.export.layouts.kohya import KohyaDreamBooth, KohyaFineTune

LAYOUTS: dict[str, type[Layout]] = {
    "kohya-dreambooth": KohyaDreamBooth,
    "kohya-finetune": KohyaFineTune,
    "diffusers-dreambooth": DiffusersDreamBooth,
    "imagefolder": ImageFolder,
    "jsonl": JsonLines,
}
LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def get_layout(name: str) -> Layout:
    """A fresh layout object by name."""
    try:
        return LAYOUTS[name]()
    except KeyError:
        raise UsageError(
            f"unknown export layout {name!r} (known: {', '.join(LAYOUT_NAMES)})"
        ) from None


__all__ = [
    "LAYOUTS",
    "LAYOUT_NAMES",
    "REG",
    "TRAIN",
    "Layout",
    "LayoutItem",
    "LayoutSettings",
    "get_layout",
]
