"""DreamBooth: a full fine-tune of the UNet (and, optionally, the text encoder) on a
subject's images, with prior preservation.

Instance images come from a kohya DreamBooth folder; each is captioned by
`--instance-prompt` when given (diffusers' DreamBooth), else by its caption file, else
by its folder's tokens (`img/20_sks dog/` → "sks dog", sd-scripts' DreamBooth).

Prior preservation trains on class images too (`--class-prompt`, `--class-data`, the
export's `reg/` folders), their loss weighed by `--prior-loss-weight`; each epoch pairs
every instance image with a class image, as sd-scripts does. When the class folder holds
fewer than `--num-class-images`, the backend generates only the shortfall with the base
model, as A1111 PNGs with infotext and a caption file, catalogued when a catalog is
given, so the next run finds and reuses them.

The result is a diffusers folder `OUT/NAME/` and one original-layout checkpoint
`OUT/NAME.safetensors` that AUTOMATIC1111, sd-scripts and `from_single_file` load
(`curator.training.sd_checkpoint`); `--save-every` checkpoints are single files.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.training import distributed
from curator.training.data import IMAGE_SUFFIXES, Dataset, Example, check_batches, load_dataset
from curator.training.loop import (
    Method,
    TrainOptions,
    TrainResult,
    check_options,
    load_base,
    resolve_epochs,
    run_loop,
    token_ids,
    train_recorded,
)

SAVE_PRECISION = ("fp32", "fp16", "bf16")
CLASS_FOLDER = "class"  # the dataset's name for --class-data images


@dataclass
class DreamBoothOptions(TrainOptions):
    lr: float = 5e-6  # the usual DreamBooth rate for a full fine-tune
    instance_prompt: str = ""  # "": each image's caption (or its folder's tokens)
    class_prompt: str = ""  # the prompt class images are captioned and generated with
    class_data: str | None = None  # class images; default OUT/class_images with a prompt
    num_class_images: int = 0  # generate up to this many class images (0: use what is there)
    class_negative_prompt: str = ""
    class_steps: int = 20  # sampling steps for generated class images
    class_sampler: str = "Euler a"
    class_cfg_scale: float = 7.0
    resolution: int = 512  # generated class images are RESOLUTION x RESOLUTION
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None  # None: the same as --lr
    save_precision: str = "fp32"  # the single-file checkpoint's float type


def class_folder(options: DreamBoothOptions) -> Path | None:
    if options.class_data:
        return Path(options.class_data).expanduser().absolute()
    if options.class_prompt:
        return Path(options.out).expanduser().absolute() / "class_images"
    return None


def class_image_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_dreambooth(options: DreamBoothOptions) -> None:
    check_options(options)
    if options.save_precision not in SAVE_PRECISION:
        raise UsageError(f"--save-precision must be one of {', '.join(SAVE_PRECISION)}")
    if options.num_class_images < 0:
        raise UsageError("--num-class-images must be 0 or more")
    if options.num_class_images and not options.class_prompt:
        raise UsageError("--num-class-images needs --class-prompt (what to generate them from)")
    if options.resolution < 8 or options.resolution % 8:
        raise UsageError("--class-size must be a positive multiple of 8")
    if options.class_data:
        folder = Path(options.class_data).expanduser()
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--class-data {folder} is not a folder")


def instance_dataset(options: DreamBoothOptions) -> Dataset:
    """The training images; captions replaced by the instance prompt when one is given."""
    dataset = load_dataset(options.data, need_captions=False)
    if options.instance_prompt:
        dataset.examples = [
            e if e.is_reg else dataclasses.replace(e, caption=options.instance_prompt)
            for e in dataset.examples
        ]
    return dataset


def class_examples(options: DreamBoothOptions, folder: Path) -> list[Example]:
    from PIL import Image, UnidentifiedImageError

    paths = class_image_paths(folder)
    if options.num_class_images:
        paths = paths[: options.num_class_images]
    examples = []
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, UnidentifiedImageError) as error:
            raise UsageError(f"class image {path} cannot be read: {error}") from error
        caption = options.class_prompt
        if not caption:
            sidecar = path.with_suffix(".txt")
            if not sidecar.is_file():
                raise UsageError(
                    f"class image {path.name} has no caption file; pass --class-prompt"
                )
            caption = sidecar.read_text(encoding="utf-8-sig").strip()
        examples.append(Example(path, caption, size, CLASS_FOLDER, 1, is_reg=True))
    return examples


def generate_class_images(
    model: Any, options: DreamBoothOptions, folder: Path, count: int, catalog: Any = None
) -> list[Path]:
    """`count` more class images from the base model, numbered on from those there; seeds
    continue from `seed + images already there`, so a grown set matches a fresh one."""
    from curator.generation.generate import GenerationParams, generate

    existing = len(class_image_paths(folder))
    params = GenerationParams(
        prompt=options.class_prompt,
        negative_prompt=options.class_negative_prompt,
        steps=options.class_steps,
        sampler=options.class_sampler,
        cfg_scale=options.class_cfg_scale,
        seed=options.seed + existing,
        width=options.resolution,
        height=options.resolution,
        batch_count=count,
    )
    scheduler = model.pipeline.scheduler  # generate() installs the sampler's own
    try:
        images = generate(model, params, folder, reporter=options.reporter, cancel=options.cancel)
    finally:
        model.pipeline.scheduler = scheduler
    for image in images:  # sd-scripts and kohya GUIs read the class caption from here
        image.path.with_suffix(".txt").write_text(options.class_prompt + "\n", encoding="utf-8")
    if catalog is not None:
        from curator.generation.catalogue import catalogue_generated

        catalogue_generated(catalog, images, model, params, workers=0)  # our own PNGs
    return [image.path for image in images]


def train_dreambooth(options: DreamBoothOptions, catalog: Any = None) -> TrainResult:
    """Fine-tune the base on `options.data`; see the module note."""
    check_dreambooth(options)
    dataset = instance_dataset(options)
    folder = class_folder(options)
    model = None
    generated: list[Path] = []
    if folder is not None:
        with distributed.main_first():  # several processes: the main one generates them
            have = len(class_image_paths(folder))
            if options.num_class_images > have:
                model = load_base(options)
                generated = generate_class_images(
                    model, options, folder, options.num_class_images - have, catalog
                )
        extra_examples = class_examples(options, folder)
        if not extra_examples:
            raise UsageError(
                f"no class images in {folder}; add some or pass --num-class-images to generate them"
            )
        dataset = Dataset(
            dataset.root,
            dataset.examples + extra_examples,
            {**dataset.repeats, CLASS_FOLDER: 1},
            shuffle_caption=dataset.shuffle_caption,
            keep_tokens=dataset.keep_tokens,
            caption_extension=dataset.caption_extension,
        )
    check_batches(dataset, options.batch_size)
    resolve_epochs(dataset, options)
    name = options.name or "dreambooth"
    extra = {
        "instance_prompt": options.instance_prompt,
        "class_prompt": options.class_prompt,
        "class_data": str(folder) if folder else None,
        "class_images": sum(e.is_reg for e in dataset.examples),
        "generated_class_images": [str(p) for p in generated],
    }

    def train() -> TrainResult:
        result = _train(options, dataset, name, model)
        result.generated = generated
        return result

    return train_recorded(catalog, "dreambooth", options, dataset, extra, train)


def _train(options: DreamBoothOptions, dataset: Dataset, name: str, model: Any) -> TrainResult:
    import torch

    from curator.training.sd_checkpoint import modelspec, save_sd_checkpoint

    model = model or load_base(options)
    pipe = model.pipeline
    pipe.vae.requires_grad_(False)
    pipe.unet.requires_grad_(True)
    pipe.text_encoder.requires_grad_(options.train_text_encoder)
    pipe.unet.train()
    groups = [{"params": list(pipe.unet.parameters()), "lr": options.lr}]
    if options.train_text_encoder:
        pipe.text_encoder.train()
        groups.append(
            {
                "params": list(pipe.text_encoder.parameters()),
                "lr": options.text_encoder_lr or options.lr,
            }
        )
    device = str(pipe.device)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[options.save_precision]
    folders: list[Path] = []

    def encode(captions: list[str]):
        ids = token_ids(pipe.tokenizer, captions, device)
        if options.train_text_encoder:
            return pipe.text_encoder(ids)[0]
        with torch.no_grad():
            return pipe.text_encoder(ids)[0]

    def save(path: Path, step: int) -> None:
        details = {"method": "dreambooth", "step": step, "steps": options.steps, "lr": options.lr}
        save_sd_checkpoint(pipe, path, modelspec(pipe, path.stem, details), dtype)
        if path.stem == name:  # the final weights: also a diffusers folder
            folders.append(save_diffusers_folder(pipe, path.with_suffix("")))

    method = Method("dreambooth", groups, encode, save, weight_decay=1e-2)
    result = run_loop(pipe, dataset, options, method, name)
    result.outputs += folders
    return result


def save_diffusers_folder(pipe: Any, folder: Path) -> Path:
    """`save_pretrained` into a temporary folder, then swapped in for the old one."""
    temporary = folder.with_name(folder.name + ".part")
    shutil.rmtree(temporary, ignore_errors=True)
    pipe.save_pretrained(temporary, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
    return folder
