"""What every layout shares: the item and settings records, and deterministic writers."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from curator.errors import UsageError
from curator.export.buckets import BucketSpec
from curator.export.filenames import safe_join

TRAIN = "train"
REG = "reg"


@dataclass(frozen=True, slots=True)
class LayoutItem:
    """One rendered image: where it is (POSIX path relative to the export root) and its text."""

    role: str  # TRAIN or REG
    path: str
    caption: str
    tags: tuple[str, ...]
    bucket: tuple[int, int]
    source_sha256: str

    @property
    def file_name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.file_name)[0]


@dataclass(frozen=True, slots=True)
class LayoutSettings:
    """The export settings a layout needs to name folders and write trainer configs.

    ``path_root`` empty means paths inside configs are relative to the export folder
    (so the same export is byte-identical wherever it is written; run the trainer
    from that folder); otherwise they are made absolute under ``path_root``.
    ``keep_tokens_separator`` is set only when captions actually contain it.
    ``export_root`` is the export's final absolute location, for the few settings a
    trainer cannot take relative (diffusers' ``--dataset_name``).
    """

    bucket: BucketSpec
    instance: str = ""
    class_word: str = ""
    repeats: int = 1
    reg_repeats: int = 1
    caption_extension: str = ".txt"
    batch_size: int = 1
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str | None = None
    captions: str = "tags"  # what the caption lines hold: tags, caption or both
    instance_prompt: str = ""
    class_prompt: str = ""
    path_root: str = ""
    export_root: str = ""  # where the export will be, absolute; for paths that must be

    def ref(self, relative: str) -> str:
        """A path as configs should name it: relative, or absolute under `path_root`."""
        if not self.path_root:
            return relative
        return str(Path(self.path_root, *relative.split("/")))


class Layout:
    """Base layout: subclasses set the class attributes and override `folder` and `write`."""

    name: ClassVar[str] = ""
    sidecars: ClassVar[bool] = False  # a caption file beside every image
    supports_reg: ClassVar[bool] = False

    def check(self, settings: LayoutSettings, *, has_reg: bool) -> None:
        """Raise `UsageError` when the settings cannot make this layout."""
        if has_reg and not self.supports_reg:
            raise UsageError(
                f"the {self.name} layout has no place for regularisation images; "
                "use kohya-dreambooth, diffusers-dreambooth or jsonl"
            )

    def folder(self, role: str, settings: LayoutSettings) -> str:
        """The POSIX folder (relative to the export root) for images of ``role``."""
        raise NotImplementedError

    def write(self, root: Path, items: Sequence[LayoutItem], settings: LayoutSettings) -> list[str]:
        """Write the layout's metadata files under ``root``; return their relative paths."""
        raise NotImplementedError


def write_text(root: Path, relative: str, text: str) -> str:
    """Write UTF-8 text with ``\\n`` line ends at ``root/relative``; returns ``relative``."""
    path = safe_join(root, *relative.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return relative


def json_text(data: Any) -> str:
    """Stable JSON: sorted keys, two-space indent, UTF-8 characters kept, final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def jsonl_text(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)


def sorted_items(items: Sequence[LayoutItem], role: str | None = None) -> list[LayoutItem]:
    return sorted((i for i in items if role is None or i.role == role), key=lambda i: i.path)
