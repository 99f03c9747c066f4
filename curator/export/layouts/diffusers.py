"""diffusers DreamBooth: instance and class image folders, prompts, per-image captions.

diffusers' ``train_dreambooth.py`` (and its LoRA/SDXL variants) opens every file in
``--instance_data_dir`` and ``--class_data_dir`` as an image, so those folders hold
images only. The prompts go to ``dreambooth.json`` (its keys are the script's argument
names) and a ready command to ``README.md``. Per-image captions, which the
``train_dreambooth_lora*.py`` scripts read from a dataset through ``--dataset_name``
and ``--caption_column``, are in ``metadata.jsonl`` at the export root: the folder is
then a Hugging Face ``imagefolder`` whose ``image`` column holds the instance images
and whose ``text`` column their captions.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.export.layouts.base import (
    REG,
    TRAIN,
    Layout,
    LayoutItem,
    LayoutSettings,
    json_text,
    jsonl_text,
    sorted_items,
    write_text,
)

INSTANCE_DIR = "instance_images"
CLASS_DIR = "class_images"
CAPTIONS_NAME = "metadata.jsonl"
ARGS_NAME = "dreambooth.json"


def _prompts(settings: LayoutSettings) -> tuple[str, str]:
    instance = settings.instance_prompt.strip() or " ".join(
        w for w in (settings.instance.strip(), settings.class_word.strip()) if w
    )
    klass = settings.class_prompt.strip() or settings.class_word.strip()
    return instance, klass


class DiffusersDreamBooth(Layout):
    name = "diffusers-dreambooth"
    supports_reg = True

    def check(self, settings: LayoutSettings, *, has_reg: bool) -> None:
        super().check(settings, has_reg=has_reg)
        instance, klass = _prompts(settings)
        if not instance:
            raise UsageError(
                "the diffusers-dreambooth layout needs an instance prompt: give an instance "
                "token (and class word) or the instance prompt itself"
            )
        if has_reg and not klass:
            raise UsageError("class images need a class word or a class prompt")

    def folder(self, role: str, settings: LayoutSettings) -> str:
        return CLASS_DIR if role == REG else INSTANCE_DIR

    def write(self, root: Path, items: Sequence[LayoutItem], settings: LayoutSettings) -> list[str]:
        instance, klass = _prompts(settings)
        has_class = bool(sorted_items(items, REG))
        step = settings.bucket.step
        args: dict[str, Any] = {
            "instance_data_dir": settings.ref(INSTANCE_DIR),
            "instance_prompt": instance,
            # The trainer makes square crops: the side of the export's square bucket.
            "resolution": math.isqrt(settings.bucket.area) // step * step or step,
            "image_column": "image",
            "caption_column": "text",
        }
        # datasets' load_dataset(".") fails ("dataset_name should be specified"): the
        # folder is named absolutely, which works from anywhere.
        if settings.export_root or settings.path_root:
            args["dataset_name"] = settings.export_root or settings.path_root
        if has_class:
            args.update(
                class_data_dir=settings.ref(CLASS_DIR),
                class_prompt=klass,
                with_prior_preservation=True,
                num_class_images=len(sorted_items(items, REG)),
            )
        rows = [
            {"file_name": item.path, "text": item.caption, "tags": list(item.tags)}
            for item in sorted_items(items, TRAIN)
        ]
        return [
            write_text(root, ARGS_NAME, json_text(args)),
            write_text(root, CAPTIONS_NAME, jsonl_text(rows)),
            write_text(root, "README.md", _readme(args)),
        ]


def _readme(args: dict[str, Any]) -> str:
    flags = [
        f"  --{key}={shlex.quote(str(args[key]))}"
        for key in ("instance_data_dir", "instance_prompt", "class_data_dir", "class_prompt")
        if key in args
    ]
    if args.get("with_prior_preservation"):
        flags.append("  --with_prior_preservation")
    flags.append(f"  --resolution={args['resolution']}")
    dataset = shlex.quote(args["dataset_name"]) if "dataset_name" in args else '"$PWD"'
    captioned = [
        f"  --dataset_name={dataset}",
        "  --caption_column=text",
        f"  --instance_prompt={shlex.quote(args['instance_prompt'])}",
    ]
    return (
        "# DreamBooth training set\n\n"
        "One prompt for every instance image (`train_dreambooth.py`):\n\n"
        "```sh\naccelerate launch train_dreambooth.py --pretrained_model_name_or_path=MODEL \\\n"
        + " \\\n".join(flags)
        + " \\\n  --output_dir=OUTPUT\n```\n\n"
        "Per-image captions from `metadata.jsonl` (`train_dreambooth_lora_sdxl.py`):\n\n"
        "```sh\naccelerate launch train_dreambooth_lora_sdxl.py "
        "--pretrained_model_name_or_path=MODEL \\\n"
        + " \\\n".join(captioned)
        + " \\\n  --output_dir=OUTPUT\n```\n\n"
        "Run from this folder, or replace the relative paths with absolute ones; "
        "`--dataset_name` is this folder's absolute path (give the new one if it moves).\n"
    )
