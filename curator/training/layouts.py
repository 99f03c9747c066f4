"""Reading a training set in any layout `curator export` writes, and recognising which.

* ``kohya-dreambooth``: ``img/{repeats}_{tokens}/`` (and ``reg/``) with caption sidecars
  and ``dataset.toml`` (caption extension, ``shuffle_caption``, ``keep_tokens``,
  ``keep_tokens_separator``, bucket settings), sd-scripts' ``--train_data_dir``;
* ``kohya-finetune``: images plus a metadata JSON (``meta_cap.json``, or the
  ``meta_lat.json`` sd-scripts' ``prepare_buckets_latents.py`` writes, or the file the
  TOML's ``metadata_file`` names) whose entries hold ``caption`` and/or ``tags``
  (joined as sd-scripts joins them) and the ``train_resolution`` bucket;
* ``imagefolder``: Hugging Face ``train/metadata.jsonl`` rows with ``file_name`` and
  the ``text`` column (``caption`` when there is no ``text``);
* ``diffusers-dreambooth``: ``instance_images/`` and ``class_images/`` with the prompts
  of ``dreambooth.json`` (per-image captions from ``metadata.jsonl`` when present);
* ``jsonl``: ``dataset.jsonl`` rows (``file_name``, ``caption``, ``role``).

Curator's ``manifest.json`` beside an export names its layout, its bucket settings and
the caption settings (shuffling, kept tokens, repeats) for layouts that have no
trainer config of their own; a folder without one is recognised by its files.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.training.data import IMAGE_SUFFIXES, Dataset, Example, TrainingDataError

if TYPE_CHECKING:
    from curator.export.buckets import BucketSpec

MANIFEST = "manifest.json"
# `ExportOptions` bucket fields; "bucket" is the preset's name
BUCKET_FIELDS = ("bucket", "max_area", "resolution", "min_side", "max_side", "step", "no_upscale")
TOML = "dataset.toml"
FINETUNE_METADATA = ("meta_lat.json", "meta_cap.json")  # sd-scripts' later stage first
DIFFUSERS_ARGS = "dreambooth.json"


@dataclass
class _Read:
    """What a layout reader found, before buckets are fitted and checks run."""

    examples: list[Example] = field(default_factory=list)
    repeats: dict[str, int] = field(default_factory=dict)
    uncaptioned: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    general: dict[str, Any] = field(default_factory=dict)  # caption settings
    spec: BucketSpec | None = None
    images_dir: Path | None = None


# --- helpers --------------------------------------------------------------------------


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        return None


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as error:
        raise TrainingDataError(f"{path}: not readable JSON ({error})") from error


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as error:
        raise TrainingDataError(f"{path}: cannot be read ({error.strerror or error})") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise TrainingDataError(f"{path}, line {number}: not JSON ({error})") from error
        if not isinstance(row, dict):
            raise TrainingDataError(f"{path}, line {number}: not a JSON object")
        rows.append(row)
    return rows


def _toml(root: Path) -> dict[str, Any]:
    path = root / TOML
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise TrainingDataError(f"{path}: not readable TOML ({error})") from error


def _manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        return {}
    data = _json(path)
    return data if isinstance(data, dict) and data.get("generator") == "curator" else {}


def _manifest_spec(manifest: dict[str, Any]) -> BucketSpec | None:
    from curator.export.buckets import BucketSpec

    spec = manifest.get("buckets", {}).get("spec")
    if not isinstance(spec, dict):
        return None
    names = {f.name for f in dataclasses.fields(BucketSpec)}
    values = {k: v for k, v in spec.items() if k in names}
    if values.get("resolution") is not None:
        values["resolution"] = tuple(values["resolution"])
    try:
        return BucketSpec(**values)
    except (TypeError, ValueError):
        return None


def _toml_spec(config: dict[str, Any]) -> BucketSpec | None:
    """The bucket settings of the TOML's first ``[[datasets]]`` (sd-scripts' names)."""
    from curator.errors import UsageError
    from curator.export.buckets import BucketSpec

    datasets = config.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        return None
    table = datasets[0]
    resolution = table.get("resolution")
    if resolution is None or not table.get("enable_bucket", False):
        return None
    if isinstance(resolution, int):
        resolution = [resolution, resolution]
    try:
        return BucketSpec(
            resolution=(int(resolution[0]), int(resolution[1])),
            min_side=int(table.get("min_bucket_reso", 256)),
            max_side=int(table.get("max_bucket_reso", 1024)),
            step=int(table.get("bucket_reso_steps", 64)),
            no_upscale=bool(table.get("bucket_no_upscale", False)),
        )
    except (UsageError, TypeError, ValueError, IndexError) as error:
        raise TrainingDataError(f"{TOML}: bucket settings that cannot work ({error})") from error


def _caption_settings(source: dict[str, Any]) -> dict[str, Any]:
    keys = ("shuffle_caption", "keep_tokens", "keep_tokens_separator", "caption_extension")
    return {k: source[k] for k in keys if source.get(k) is not None}


def _add(
    read: _Read,
    path: Path,
    caption: str | None,
    folder: str,
    repeats: int,
    is_reg: bool = False,
    bucket: tuple[int, int] | None = None,
) -> None:
    """One image: measured, captioned (or listed as uncaptioned / unreadable)."""
    size = _image_size(path)
    if size is None:
        read.unreadable.append(path.name)
        return
    caption = (caption or "").strip()
    if not caption and not is_reg and path.name not in read.uncaptioned:
        read.uncaptioned.append(path.name)
    bucket = tuple(bucket) if bucket else size  # type: ignore[assignment]
    source = size if bucket != size else None
    read.examples.append(Example(path, caption, bucket, folder, repeats, is_reg, source))  # type: ignore[arg-type]


def _repeat_folder(path: Path) -> tuple[int, str] | None:
    count, sep, tokens = path.name.partition("_")
    if not sep or not count.isdigit() or int(count) < 1:
        return None
    return int(count), tokens


def _repeat_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _repeat_folder(p))


# --- readers ----------------------------------------------------------------------------


def _inside(root: Path, folder: str) -> Path:
    """`folder` as a config names it, or the folder of that name in `root` when the
    named one is not there (absolute paths from before the set was moved)."""
    named = root / folder
    return named if named.is_dir() else root / Path(folder).name


def _kohya_dreambooth(root: Path, manifest: dict[str, Any], reg: bool) -> _Read:
    config = _toml(root)
    general = config.get("general") if isinstance(config.get("general"), dict) else {}
    read = _Read(general=_caption_settings(general), spec=_toml_spec(config))
    extension = read.general.get("caption_extension", ".txt")
    images_dir = root / "img" if (root / "img").is_dir() else root
    read.images_dir = images_dir
    folders = _repeat_folders(images_dir)
    if not folders:
        raise TrainingDataError(
            f"{images_dir} has no `N_tokens` folders (kohya DreamBooth layout: "
            "img/10_sks dog/ with images and caption files)"
        )
    reg_dir = root / "reg"
    if reg and images_dir != root:
        folders += _repeat_folders(reg_dir)
    for folder in folders:
        count, tokens = _repeat_folder(folder)  # type: ignore[misc]
        is_reg = folder.parent == reg_dir
        read.repeats[folder.name] = count
        for path in _images(folder):
            caption_file = path.with_suffix(extension)
            caption = ""
            if caption_file.is_file():
                caption = caption_file.read_text(encoding="utf-8-sig").strip()
            elif not is_reg:
                read.uncaptioned.append(path.name)
            # sd-scripts: an image without a caption trains on the folder's class tokens
            _add(read, path, caption or tokens, folder.name, count, is_reg)
    return read


def _finetune_metadata(root: Path, config: dict[str, Any]) -> tuple[Path, Path, int]:
    """(metadata file, image folder, repeats) from the TOML's subset, else the defaults."""
    for dataset in config.get("datasets", []) if isinstance(config.get("datasets"), list) else []:
        for subset in dataset.get("subsets", []) if isinstance(dataset, dict) else []:
            if isinstance(subset, dict) and subset.get("metadata_file"):
                metadata = root / subset["metadata_file"]
                image_dir = root / subset.get("image_dir", ".")
                return metadata, image_dir, int(subset.get("num_repeats", 1))
    for name in FINETUNE_METADATA:
        if (root / name).is_file():
            return root / name, root, 1
    raise TrainingDataError(f"{root} has no {' or '.join(FINETUNE_METADATA)} (kohya fine-tuning)")


def _finetune_image(key: str, root: Path, image_dir: Path) -> Path | None:
    """The image a metadata key names: a path as written (absolute, or from the image
    folder, or from the export folder), or an extension-less key as older sd-scripts
    writes them."""
    for base in (image_dir, root):
        candidate = base / key
        if candidate.is_file():
            return candidate
        for suffix in IMAGE_SUFFIXES:
            with_suffix = base / f"{key}{suffix}"
            if with_suffix.is_file():
                return with_suffix
    return None


def _kohya_finetune(root: Path, manifest: dict[str, Any], reg: bool) -> _Read:
    config = _toml(root)
    general = config.get("general") if isinstance(config.get("general"), dict) else {}
    read = _Read(general=_caption_settings(general), spec=_toml_spec(config))
    metadata_path, image_dir, repeats = _finetune_metadata(root, config)
    if not metadata_path.is_file():
        raise TrainingDataError(f"the metadata file {metadata_path} does not exist")
    metadata = _json(metadata_path)
    if not isinstance(metadata, dict):
        raise TrainingDataError(f"{metadata_path}: not a JSON object of image entries")
    read.images_dir = image_dir
    folder = metadata_path.name
    read.repeats[folder] = repeats
    missing = []
    for key in sorted(metadata):
        entry = metadata[key] if isinstance(metadata[key], dict) else {}
        path = _finetune_image(key, root, image_dir)
        if path is None:
            missing.append(key)
            continue
        # sd-scripts' FineTuningDataset: the caption, then the tags after ", "
        caption, tags = entry.get("caption"), entry.get("tags")
        if caption is None:
            caption, tags = tags, None
        if caption is not None and tags:
            caption = f"{caption}, {tags}"
        bucket = entry.get("train_resolution")
        bucket = (int(bucket[0]), int(bucket[1])) if isinstance(bucket, list | tuple) else None
        _add(read, path, caption, folder, repeats, bucket=bucket)
    if missing:
        raise TrainingDataError(
            f"{len(missing)} image(s) named in {metadata_path.name} are not there, "
            f"e.g. {missing[0]}"
        )
    return read


def _settings_from_manifest(manifest: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """Caption settings and repeats recorded by the export, for layouts with no TOML.
    The separator is in the captions only when shuffling was asked for."""
    settings = manifest.get("settings", {}) if isinstance(manifest.get("settings"), dict) else {}
    general = _caption_settings(settings)
    if not general.get("shuffle_caption"):
        general.pop("keep_tokens_separator", None)
    return general, int(settings.get("repeats", 1) or 1), int(settings.get("reg_repeats", 1) or 1)


def _imagefolder(root: Path, manifest: dict[str, Any], reg: bool) -> _Read:
    general, repeats, _ = _settings_from_manifest(manifest)
    read = _Read(general=general, spec=_manifest_spec(manifest))
    folder = root / "train" if (root / "train" / "metadata.jsonl").is_file() else root
    metadata_path = folder / "metadata.jsonl"
    if not metadata_path.is_file():
        raise TrainingDataError(f"{root} has no train/metadata.jsonl (Hugging Face imagefolder)")
    read.images_dir = folder
    rows = {str(row.get("file_name", "")): row for row in _jsonl(metadata_path)}
    name = folder.name
    read.repeats[name] = repeats
    for path in _images(folder):
        row = rows.get(path.relative_to(folder).as_posix(), {})
        caption = row.get("text", row.get("caption"))
        _add(read, path, caption if isinstance(caption, str) else None, name, repeats)
    return read


def _diffusers_dreambooth(root: Path, manifest: dict[str, Any], reg: bool) -> _Read:
    general, repeats, reg_repeats = _settings_from_manifest(manifest)
    read = _Read(general=general, spec=_manifest_spec(manifest))
    if not (root / DIFFUSERS_ARGS).is_file() and not (root / "instance_images").is_dir():
        raise TrainingDataError(
            f"{root} has neither {DIFFUSERS_ARGS} nor instance_images/ (diffusers DreamBooth)"
        )
    args = _json(root / DIFFUSERS_ARGS) if (root / DIFFUSERS_ARGS).is_file() else {}
    if not isinstance(args, dict):
        raise TrainingDataError(f"{root / DIFFUSERS_ARGS}: not a JSON object")
    # an export with absolute paths that has since moved: its own folders
    instance_dir = _inside(root, str(args.get("instance_data_dir", "instance_images")))
    class_dir = _inside(root, str(args.get("class_data_dir", "class_images")))
    instance_prompt = str(args.get("instance_prompt", "") or "")
    class_prompt = str(args.get("class_prompt", "") or "")
    captions: dict[str, str] = {}
    if (root / "metadata.jsonl").is_file():
        for row in _jsonl(root / "metadata.jsonl"):
            text = row.get(str(args.get("caption_column", "text")))
            if isinstance(text, str) and text.strip():
                captions[str(row.get("file_name", ""))] = text
    read.images_dir = instance_dir
    read.repeats[instance_dir.name] = repeats
    for path in _images(instance_dir):
        caption = captions.get(path.relative_to(root).as_posix(), instance_prompt)
        _add(read, path, caption, instance_dir.name, repeats)
    if reg and _images(class_dir):
        if not class_prompt:
            raise TrainingDataError(f"{DIFFUSERS_ARGS} has class images but no class_prompt")
        read.repeats[class_dir.name] = reg_repeats
        for path in _images(class_dir):
            _add(read, path, class_prompt, class_dir.name, reg_repeats, is_reg=True)
    return read


def _jsonl_layout(root: Path, manifest: dict[str, Any], reg: bool) -> _Read:
    general, repeats, reg_repeats = _settings_from_manifest(manifest)
    read = _Read(general=general, spec=_manifest_spec(manifest))
    read.images_dir = root
    if not (root / "dataset.jsonl").is_file():
        raise TrainingDataError(f"{root} has no dataset.jsonl (jsonl layout)")
    missing = []
    for row in _jsonl(root / "dataset.jsonl"):
        is_reg = row.get("role") == "reg"
        if is_reg and not reg:
            continue
        path = root / str(row.get("file_name", ""))
        if not path.is_file():
            missing.append(str(row.get("file_name", "")))
            continue
        folder = path.parent.name
        count = reg_repeats if is_reg else repeats
        read.repeats[folder] = count
        caption = row.get("caption")
        _add(read, path, caption if isinstance(caption, str) else None, folder, count, is_reg)
    if missing:
        raise TrainingDataError(
            f"{len(missing)} image(s) in dataset.jsonl are not there, e.g. {missing[0]}"
        )
    return read


READERS = {
    "kohya-dreambooth": _kohya_dreambooth,
    "kohya-finetune": _kohya_finetune,
    "imagefolder": _imagefolder,
    "diffusers-dreambooth": _diffusers_dreambooth,
    "jsonl": _jsonl_layout,
}
LAYOUT_NAMES: tuple[str, ...] = tuple(READERS)
_LOOKED_FOR = (
    "kohya-dreambooth (img/ with `N_tokens` folders), kohya-finetune (meta_cap.json or "
    "meta_lat.json), imagefolder (train/metadata.jsonl), diffusers-dreambooth "
    "(dreambooth.json, instance_images/), jsonl (dataset.jsonl)"
)


# --- detection ----------------------------------------------------------------------------


def _found(root: Path) -> str:
    """A short account of what a folder holds, for the error naming it."""
    entries = sorted(root.iterdir())
    folders = [p.name + "/" for p in entries if p.is_dir()]
    images = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p.name for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
    parts = []
    for label, names in (("folder", folders), ("image", images), ("other file", others)):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {label}{'' if len(names) == 1 else 's'} ({shown})")
    return " and ".join(parts) if parts else "nothing (an empty folder)"


def detect_layout(root: str | Path) -> str:
    """The layout of the training set at `root`: the one its Curator manifest names, else
    the one whose files are there."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TrainingDataError(f"no such training data folder: {root}")
    named = _manifest(root).get("layout")
    if named in READERS:
        return named
    if _repeat_folders(root / "img") or _repeat_folders(root):
        return "kohya-dreambooth"
    config = _toml(root)
    has_metadata_file = any(
        isinstance(s, dict) and s.get("metadata_file")
        for d in config.get("datasets", []) if isinstance(d, dict)
        for s in d.get("subsets", [])
    )  # fmt: skip
    if has_metadata_file or any((root / n).is_file() for n in FINETUNE_METADATA):
        return "kohya-finetune"
    if (root / DIFFUSERS_ARGS).is_file() or (root / "instance_images").is_dir():
        return "diffusers-dreambooth"
    if (root / "dataset.jsonl").is_file():
        return "jsonl"
    if (root / "train" / "metadata.jsonl").is_file() or (root / "metadata.jsonl").is_file():
        return "imagefolder"
    raise TrainingDataError(
        f"{root} is not a training set Curator can read: found {_found(root)}; "
        f"looked for {_LOOKED_FOR}"
    )


# --- buckets and checks ----------------------------------------------------------------------


def _resolution_text(spec: BucketSpec) -> str:
    if spec.resolution is not None:
        return f"{spec.resolution[0]}x{spec.resolution[1]}"
    return f"area {spec.area}"


def bucket_spec(buckets: dict[str, Any] | None, base: BucketSpec | None = None) -> Any:
    """`base` (a layout's own buckets) adjusted by `ExportOptions` bucket fields, as
    `curator export` adjusts a preset: a named preset replaces it, and with no base the
    sd15 preset is adjusted. None when neither is given."""
    from curator.export.buckets import preset

    given = {k: v for k, v in (buckets or {}).items() if v is not None}
    unknown = set(given) - set(BUCKET_FIELDS)
    if unknown:
        raise TrainingDataError(f"unknown bucket setting(s): {', '.join(sorted(unknown))}")
    if not given:
        return base
    name = given.pop("bucket", None)
    spec = preset(name) if name else (base or preset("sd15"))
    changes = {k: given[k] for k in ("min_side", "max_side", "step", "no_upscale") if k in given}
    if "max_area" in given:
        changes.update(max_area=given["max_area"], resolution=None)
    if "resolution" in given:
        changes.update(resolution=tuple(given["resolution"]), max_area=None)
    return dataclasses.replace(spec, **changes)


def _fit_buckets(
    examples: list[Example], spec: BucketSpec | None, allow_upscale: bool
) -> list[Example]:
    """Each example's bucket under `spec` (the file is resized to it as it is read); an
    image the bucket would enlarge is refused unless `allow_upscale`."""
    from curator.export.buckets import BucketError, make_buckets, select_bucket

    fitted = examples
    if spec is not None:
        if allow_upscale and spec.no_upscale:
            spec = dataclasses.replace(spec, no_upscale=False)
        buckets = None if spec.no_upscale else make_buckets(spec)
        fitted = []
        for example in examples:
            width, height = example.source_size or example.size
            try:
                bucket = select_bucket(width, height, spec, buckets)
            except BucketError as error:
                raise TrainingDataError(f"{example.path.name}: {error}") from error
            source = (width, height) if bucket != (width, height) else None
            fitted.append(dataclasses.replace(example, size=bucket, source_size=source))
    small = [
        e
        for e in fitted
        if e.source_size and (e.size[0] > e.source_size[0] or e.size[1] > e.source_size[1])
    ]
    if small and not allow_upscale:
        first = small[0]
        at = f" at training resolution {_resolution_text(spec)}" if spec is not None else ""
        raise TrainingDataError(
            f"{len(small)} image(s) are smaller than their bucket{at}, e.g. {first.path.name} "
            f"{first.source_size[0]}x{first.source_size[1]} for "  # type: ignore[index]
            f"{first.size[0]}x{first.size[1]}; pass --allow-upscale to enlarge them, or "
            "train at a lower --resolution"
        )
    return fitted


def read_training_set(
    root: str | Path,
    *,
    layout: str | None = None,
    need_captions: bool = True,
    reg: bool = True,
    spec: BucketSpec | None = None,
    allow_upscale: bool = False,
    buckets: dict[str, Any] | None = None,
) -> Dataset:
    """Read the training set at `root` or say in one line why it cannot train.

    `layout`: force a layout instead of detecting it. `need_captions`: refuse training
    images without a caption (regularisation images fall back to their class words).
    `reg`: also read regularisation images. `spec`: buckets to train at instead of the
    export's own (each image is resized and centre-cropped to its bucket); an image its
    bucket would enlarge is refused unless `allow_upscale`. `buckets`: `ExportOptions`
    bucket fields that adjust the export's own buckets (see `bucket_spec`) instead.
    """
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise TrainingDataError(f"no such training data folder: {path}")
    if layout is not None and layout not in READERS:
        raise TrainingDataError(
            f"unknown training data layout {layout!r} (known: {', '.join(LAYOUT_NAMES)})"
        )
    name = layout or detect_layout(path)
    manifest = _manifest(path)
    read = READERS[name](path, manifest, reg)
    if read.unreadable:
        raise TrainingDataError(
            f"{len(read.unreadable)} image(s) cannot be read, e.g. {read.unreadable[0]}; "
            "re-export or remove them"
        )
    if not any(not e.is_reg for e in read.examples):
        raise TrainingDataError(f"no images under {read.images_dir or path} ({name} layout)")
    if read.uncaptioned and need_captions:
        extension = read.general.get("caption_extension", ".txt")
        where = {
            "kohya-dreambooth": f"no caption file ({extension})",
            "kohya-finetune": "no caption or tags in the metadata",
            "imagefolder": "no text in metadata.jsonl",
            "diffusers-dreambooth": "no caption and there is no instance_prompt",
            "jsonl": "no caption in dataset.jsonl",
        }[name]
        raise TrainingDataError(
            f"{len(read.uncaptioned)} image(s) have {where}, e.g. {read.uncaptioned[0]}; "
            "tag or caption them and export again"
        )
    spec = spec or bucket_spec(buckets, read.spec)
    examples = _fit_buckets(read.examples, spec, allow_upscale)
    return Dataset(
        path,
        examples,
        read.repeats,
        shuffle_caption=bool(read.general.get("shuffle_caption", False)),
        keep_tokens=int(read.general.get("keep_tokens", 0) or 0),
        caption_extension=str(read.general.get("caption_extension", ".txt")),
        keep_tokens_separator=str(read.general.get("keep_tokens_separator", "") or ""),
        layout=name,
        spec=spec,
    )
