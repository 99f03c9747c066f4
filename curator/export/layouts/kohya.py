"""kohya-ss sd-scripts layouts: DreamBooth folders and fine-tuning metadata, each with a TOML.

``dataset.toml`` uses the key names of sd-scripts' ``library/config_util.py``:
``[general]`` (``shuffle_caption``, ``caption_extension``, ``keep_tokens``,
``keep_tokens_separator``), ``[[datasets]]`` (``resolution``, ``batch_size``,
``enable_bucket``, ``min_bucket_reso``, ``max_bucket_reso``, ``bucket_reso_steps``,
``bucket_no_upscale``) and ``[[datasets.subsets]]`` (``image_dir``, ``num_repeats``,
``class_tokens``, ``is_reg``; ``metadata_file`` for fine-tuning). Pass it to a
trainer with ``--dataset_config dataset.toml``, run from the export folder (paths are
relative unless the export was made with absolute paths).

Images are already cut to their buckets, so sd-scripts' own bucketing with the same
settings puts each one in the bucket it was made for, without resizing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curator.export.filenames import safe_name
from curator.export.layouts.base import (
    REG,
    TRAIN,
    Layout,
    LayoutItem,
    LayoutSettings,
    json_text,
    sorted_items,
    write_text,
)

TOML_NAME = "dataset.toml"
METADATA_NAME = "meta_cap.json"


# --- a minimal TOML writer: the standard library reads TOML but cannot write it ---------


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_pairs(table: dict[str, Any], indent: str = "") -> list[str]:
    return [f"{indent}{key} = {toml_value(table[key])}" for key in sorted(table)]


def dataset_toml(general: dict[str, Any], datasets: Sequence[dict[str, Any]]) -> str:
    """``[general]`` plus ``[[datasets]]`` each with its ``subsets`` list of tables."""
    lines = ["[general]", *_toml_pairs(general)]
    for dataset in datasets:
        fields = {k: v for k, v in dataset.items() if k != "subsets"}
        lines += ["", "[[datasets]]", *_toml_pairs(fields)]
        for subset in dataset.get("subsets", []):
            lines += ["", "  [[datasets.subsets]]", *_toml_pairs(subset, "  ")]
    return "\n".join(lines) + "\n"


def dataset_fields(settings: LayoutSettings) -> dict[str, Any]:
    """The ``[[datasets]]`` bucket settings that reproduce the export's buckets."""
    spec = settings.bucket
    return {
        # The exact pair: sd-scripts' bucket area is W * H (see BucketSpec.resolution_pair).
        "resolution": list(spec.resolution_pair),
        "batch_size": settings.batch_size,
        "enable_bucket": True,
        "min_bucket_reso": spec.min_side,
        "max_bucket_reso": spec.max_side,
        "bucket_reso_steps": spec.step,
        "bucket_no_upscale": spec.no_upscale,
    }


def caption_fields(settings: LayoutSettings) -> dict[str, Any]:
    """Caption handling keys. sd-scripts reads ``keep_tokens_separator`` (and strips it
    from the caption) only when it shuffles, so the separator is written only then;
    captions made without shuffling carry no separator, and ``keep_tokens`` is a count."""
    fields: dict[str, Any] = {
        "shuffle_caption": settings.shuffle_caption,
        "keep_tokens": settings.keep_tokens,
    }
    if settings.keep_tokens_separator and settings.shuffle_caption:
        fields["keep_tokens_separator"] = settings.keep_tokens_separator
    return fields


class _Kohya(Layout):
    def check(self, settings: LayoutSettings, *, has_reg: bool) -> None:
        super().check(settings, has_reg=has_reg)
        settings.bucket.resolution_pair  # noqa: B018 -- raises UsageError when it has none


def instance_tokens(settings: LayoutSettings) -> str:
    return " ".join(w for w in (settings.instance.strip(), settings.class_word.strip()) if w)


# --- DreamBooth: repeat-count folders with caption sidecars ------------------------------


class KohyaDreamBooth(_Kohya):
    """``img/{repeats}_{instance} {class}/`` and ``reg/{repeats}_{class}/`` with sidecars.

    The folder names follow sd-scripts' ``--train_data_dir`` / ``--reg_data_dir``
    convention (the number before ``_`` is the repeat count, the rest the class
    tokens used for an image without a caption), so the export trains either with
    those options or with ``--dataset_config dataset.toml``.
    """

    name = "kohya-dreambooth"
    sidecars = True
    supports_reg = True

    def folder(self, role: str, settings: LayoutSettings) -> str:
        if role == REG:
            return f"reg/{settings.reg_repeats}_{safe_name(settings.class_word, fallback='class')}"
        return f"img/{settings.repeats}_{safe_name(instance_tokens(settings), fallback='images')}"

    def write(self, root: Path, items: Sequence[LayoutItem], settings: LayoutSettings) -> list[str]:
        train: dict[str, Any] = {
            "image_dir": settings.ref(self.folder(TRAIN, settings)),
            "num_repeats": settings.repeats,
        }
        if tokens := instance_tokens(settings):
            train["class_tokens"] = tokens
        subsets = [train]
        if sorted_items(items, REG):
            reg: dict[str, Any] = {
                "image_dir": settings.ref(self.folder(REG, settings)),
                "num_repeats": settings.reg_repeats,
                "is_reg": True,
            }
            if settings.class_word.strip():
                reg["class_tokens"] = settings.class_word.strip()
            subsets.append(reg)
        general = {"caption_extension": settings.caption_extension, **caption_fields(settings)}
        text = dataset_toml(general, [{**dataset_fields(settings), "subsets": subsets}])
        return [write_text(root, TOML_NAME, text)]


# --- fine-tuning: one folder plus a metadata JSON ----------------------------------------


class KohyaFineTune(_Kohya):
    """``train/`` plus ``meta_cap.json``, read by sd-scripts' fine-tuning datasets.

    Keys are image paths with their extension: relative to the export folder with
    ``image_dir`` that folder (or both absolute with absolute paths). sd-scripts from
    January 2026 joins ``image_dir`` and the key as written; older releases take a key
    that exists as a path (from the folder the trainer runs in) as is. Each entry has
    ``image_size`` ``[w, h]`` (what the newer code reads; the size of the written
    file) and, unless ``bucket_no_upscale`` is on, ``train_resolution`` (the bucket,
    which older code uses as predefined buckets; it refuses it with no-upscale and
    then measures the files, which are already their own buckets). The caption line
    is under ``tags`` when captions are tags only (like ``merge_dd_tags_to_metadata.py``),
    else under ``caption``; a line holding both is written whole under ``caption``,
    since sd-scripts would otherwise append ``tags`` a second time. The TOML has no
    ``caption_extension``: ``fine_tune.py`` rejects that key.
    """

    name = "kohya-finetune"

    def folder(self, role: str, settings: LayoutSettings) -> str:
        return "train"

    def write(self, root: Path, items: Sequence[LayoutItem], settings: LayoutSettings) -> list[str]:
        key = "tags" if settings.captions == "tags" else "caption"
        metadata: dict[str, dict[str, Any]] = {}
        for item in sorted_items(items, TRAIN):
            entry: dict[str, Any] = {key: item.caption, "image_size": list(item.bucket)}
            if not settings.bucket.no_upscale:
                entry["train_resolution"] = list(item.bucket)
            metadata[settings.ref(item.path)] = entry
        subset = {
            "image_dir": settings.ref("."),
            "metadata_file": settings.ref(METADATA_NAME),
            "num_repeats": settings.repeats,
        }
        text = dataset_toml(
            caption_fields(settings), [{**dataset_fields(settings), "subsets": [subset]}]
        )
        return [
            write_text(root, METADATA_NAME, json_text(metadata)),
            write_text(root, TOML_NAME, text),
        ]
