"""Model names → files on disk.

Presets and bundled detectors are tables of data. `resolve` turns a spec (a preset
name, an imported name, a directory or an .onnx file) into local file paths, looking
in this order: the explicit path → `models_dir/NAME/` (filled by `import_model`) →
the Hugging Face cache → a hub download (unless offline) → `ModelNotFoundError`.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from taggers.errors import (
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    TaggerError,
    install_hint,
)

WD14 = "wd14"
DEEPDANBOORU = "deepdanbooru"

WD14_MODEL_FILE = "model.onnx"
WD14_TAGS_FILE = "selected_tags.csv"
DEEPDANBOORU_TAGS_FILE = "tags.txt"
# DeepDanbooru projects may ship per-category lists beside tags.txt (tags-character.txt, ...).
DEEPDANBOORU_CATEGORY_GLOB = "tags-*.txt"

IMPORT_HINT = "curator models import DIR --name {name}"

# Each tagger family is recognised by the tag list beside its .onnx file, in this order.
TAG_FILES: dict[str, str] = {WD14: WD14_TAGS_FILE, DEEPDANBOORU: DEEPDANBOORU_TAGS_FILE}


def _tag_list(directory: Path) -> tuple[str, Path] | None:
    """(kind, tag list) of the first family whose tag list `directory` holds."""
    for kind, filename in TAG_FILES.items():
        if (directory / filename).is_file():
            return kind, directory / filename
    return None


@dataclass(frozen=True, slots=True)
class Preset:
    """A downloadable tagger: which hub repository holds which files."""

    name: str
    kind: str  # WD14 | DEEPDANBOORU
    repo: str
    model_file: str
    tags_file: str
    description: str
    hub_revision: str | None = None  # None: the repository's default branch

    @property
    def files(self) -> tuple[str, str]:
        return (self.model_file, self.tags_file)


@dataclass(frozen=True, slots=True)
class BundledDetector:
    """A detector whose weights ship inside a PyPI package."""

    name: str
    package: str  # import name of the package that ships the files
    pip_name: str  # what to `pip install` when it is missing
    resources: tuple[str, ...]  # file paths inside the package
    description: str


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Local files for one tagger, and where they were found."""

    name: str
    kind: str  # WD14 | DEEPDANBOORU
    model_path: Path
    tags_path: Path
    source: str  # "path" | "models_dir" | "hub_cache" | "hub"


def _wd(name: str, description: str) -> Preset:
    return Preset(
        name=name,
        kind=WD14,
        repo=f"SmilingWolf/{name}",
        model_file=WD14_MODEL_FILE,
        tags_file=WD14_TAGS_FILE,
        description=description,
    )


# SmilingWolf's WD14 taggers: (hub repository name, description); all 448px NHWC.
WD14_PRESETS: tuple[tuple[str, str], ...] = (
    ("wd-v1-4-moat-tagger-v2", "WD 1.4 MOAT, Danbooru v2 tags, 448px"),
    ("wd-v1-4-swinv2-tagger-v2", "WD 1.4 SwinV2, Danbooru v2 tags, 448px"),
    ("wd-v1-4-convnext-tagger-v2", "WD 1.4 ConvNeXt, Danbooru v2 tags, 448px"),
    ("wd-v1-4-convnextv2-tagger-v2", "WD 1.4 ConvNeXtV2, Danbooru v2 tags, 448px"),
    ("wd-v1-4-vit-tagger-v2", "WD 1.4 ViT, Danbooru v2 tags, 448px"),
    ("wd-vit-tagger-v3", "WD ViT, Danbooru v3 tags, 448px"),
    ("wd-swinv2-tagger-v3", "WD SwinV2, Danbooru v3 tags, 448px"),
    ("wd-convnext-tagger-v3", "WD ConvNeXt, Danbooru v3 tags, 448px"),
    ("wd-vit-large-tagger-v3", "WD ViT-Large, Danbooru v3 tags, 448px"),
    ("wd-eva02-large-tagger-v3", "WD EVA02-Large, Danbooru v3 tags, 448px"),
)

PRESETS: tuple[Preset, ...] = (
    *(_wd(name, description) for name, description in WD14_PRESETS),
    # An ONNX conversion of KichangKim's DeepDanbooru (resnet_custom_v3, NHWC 512px input,
    # one tag per line in tags.txt), as used by public demos through hf_hub_download.
    Preset(
        name="deepdanbooru",
        kind=DEEPDANBOORU,
        repo="chinoll/deepdanbooru",
        model_file="deepdanbooru.onnx",
        tags_file=DEEPDANBOORU_TAGS_FILE,
        description="DeepDanbooru v3 (ONNX conversion), 512px",
    ),
)

DETECTORS: tuple[BundledDetector, ...] = (
    BundledDetector(
        name="nsfw",
        package="nudenet",
        pip_name="nudenet",
        resources=("320n.onnx",),
        description="NudeNet 320n exposed/covered body-part detector",
    ),
    BundledDetector(
        name="text",
        package="rapidocr_onnxruntime",
        pip_name="rapidocr-onnxruntime",
        resources=(
            "models/ch_PP-OCRv4_det_infer.onnx",
            "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "models/ch_PP-OCRv4_rec_infer.onnx",
        ),
        description="PP-OCRv4 text detector and recogniser (RapidOCR)",
    ),
    BundledDetector(
        name="faces",
        package="cv2",
        pip_name="opencv-python-headless",
        resources=("data/haarcascade_frontalface_default.xml",),
        description="OpenCV Haar cascade for frontal faces",
    ),
)


def default_models_dir() -> Path:
    """Where imported models live: `$CURATOR_MODELS`, else `~/.cache/curator/models`."""
    env = os.environ.get("CURATOR_MODELS")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "curator" / "models"


def list_presets() -> list[Preset]:
    return list(PRESETS)


def get_preset(name: str) -> Preset | None:
    return next((p for p in PRESETS if p.name == name), None)


def list_detectors() -> list[BundledDetector]:
    return list(DETECTORS)


def get_detector(name: str) -> BundledDetector | None:
    return next((d for d in DETECTORS if d.name == name), None)


def detector_files(name: str) -> tuple[Path, ...]:
    """Paths of a bundled detector's weights inside its installed package."""
    detector = get_detector(name)
    if detector is None:
        known = ", ".join(d.name for d in DETECTORS)
        raise TaggerError(f"unknown detector {name!r}; known detectors: {known}")
    try:
        root = importlib.resources.files(detector.package)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"detector {name!r} needs the {detector.pip_name} package, which is not "
            f"installed: {install_hint(detector.package)}"
        ) from exc
    paths = tuple(Path(str(root / resource)) for resource in detector.resources)
    for path in paths:
        if not path.is_file():
            raise ModelNotFoundError(
                f"detector {name!r}: {path} is missing from the installed {detector.pip_name}; "
                f"reinstall it with pip install --force-reinstall {detector.pip_name}"
            )
    return paths


def is_offline(offline: bool | None = None) -> bool:
    """An explicit choice wins; otherwise `HF_HUB_OFFLINE`, read now rather than at import."""
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def inspect_dir(directory: Path) -> tuple[str, Path, Path] | None:
    """(kind, model file, tags file) if `directory` holds a recognised tagger, else None."""
    if not directory.is_dir():
        return None
    onnx_files = sorted(p for p in directory.glob("*.onnx") if p.is_file())
    found = _tag_list(directory)
    if found is None:
        return None
    kind, tags = found
    if (directory / WD14_MODEL_FILE).is_file():
        return kind, directory / WD14_MODEL_FILE, tags
    if len(onnx_files) == 1:
        return kind, onnx_files[0], tags
    if onnx_files:
        names = ", ".join(p.name for p in onnx_files)
        raise ModelLoadError(
            f"{directory} holds several .onnx files ({names}); name the one to use as FILE.onnx"
        )
    return None


def _describe_missing(directory: Path) -> str:
    """Which file a directory lacks, for error messages."""
    has_onnx = any(directory.glob("*.onnx"))
    has_tags = _tag_list(directory) is not None
    if not has_onnx:
        return f"{directory / WD14_MODEL_FILE} is missing (no .onnx file in {directory})"
    if not has_tags:
        return (
            f"{directory / WD14_TAGS_FILE} is missing (a WD14 tagger needs it; "
            f"a DeepDanbooru model needs {DEEPDANBOORU_TAGS_FILE})"
        )
    return f"{directory} does not hold a recognised tagger"


def _resolve_path(path: Path) -> ResolvedModel:
    if path.is_dir():
        found = inspect_dir(path)
        if found is None:
            raise ModelNotFoundError(_describe_missing(path))
        kind, model_path, tags_path = found
        return ResolvedModel(path.resolve().name, kind, model_path, tags_path, "path")
    if path.suffix.lower() != ".onnx":
        raise ModelLoadError(f"{path}: expected a directory or an .onnx file")
    parent = path.parent
    found = _tag_list(parent)
    if found is None:
        raise ModelNotFoundError(
            f"{parent / WD14_TAGS_FILE} is missing: {path.name} needs its tag list beside it "
            f"({WD14_TAGS_FILE} for WD14, {DEEPDANBOORU_TAGS_FILE} for DeepDanbooru)"
        )
    kind, tags_path = found
    name = parent.resolve().name if path.stem == "model" else path.stem
    return ResolvedModel(name, kind, path, tags_path, "path")


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith(".onnx") or spec.startswith(".")


def _from_hub(preset: Preset, *, cache_dir: Path | None, local_only: bool) -> tuple[Path, Path]:
    # Imported here: huggingface_hub is only needed when a preset is not imported locally.
    from huggingface_hub import hf_hub_download

    model_path, tags_path = (
        Path(
            hf_hub_download(
                preset.repo,
                filename,
                revision=preset.hub_revision,
                cache_dir=cache_dir,
                local_files_only=local_only,
            )
        )
        for filename in preset.files
    )
    return model_path, tags_path


def resolve(
    spec: str,
    *,
    models_dir: Path,
    offline: bool | None = None,
    cache_dir: Path | None = None,
) -> ResolvedModel:
    """Find a tagger's files locally, in the hub cache, or by downloading them.

    `cache_dir` is the Hugging Face hub cache (default: huggingface_hub's own).
    """
    path = Path(spec).expanduser()
    if path.exists():
        return _resolve_path(path)
    if _looks_like_path(spec):
        raise ModelNotFoundError(f"{spec}: no such file or directory")

    name = spec
    models_dir = Path(models_dir)
    local_dir = models_dir / name
    preset = get_preset(name)
    if local_dir.is_dir():
        found = inspect_dir(local_dir)
        if found is not None:
            kind, model_path, tags_path = found
            return ResolvedModel(name, kind, model_path, tags_path, "models_dir")
        if preset is None:
            raise ModelNotFoundError(
                f"{_describe_missing(local_dir)}; re-import it with "
                f"`{IMPORT_HINT.format(name=name)}`"
            )
    if preset is None:
        presets = ", ".join(p.name for p in PRESETS)
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a preset, not a path, and not in {models_dir}. "
            f"Import it with `{IMPORT_HINT.format(name=name)}`, or use a preset: {presets}"
        )

    try:
        model_path, tags_path = _from_hub(preset, cache_dir=cache_dir, local_only=True)
        return ResolvedModel(name, preset.kind, model_path, tags_path, "hub_cache")
    except Exception:  # noqa: BLE001 - any cache miss falls through to the next source
        pass

    if is_offline(offline):
        reason = "hub downloads are off (HF_HUB_OFFLINE=1 or offline mode)"
    elif (unreachable := _hub_unreachable()) is not None:
        reason = f"the hub is unreachable ({unreachable})"
    else:
        try:
            model_path, tags_path = _from_hub(preset, cache_dir=cache_dir, local_only=False)
            return ResolvedModel(name, preset.kind, model_path, tags_path, "hub")
        except Exception as exc:  # noqa: BLE001 - network and hub errors become one clear error
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"the download failed ({type(exc).__name__}: {first_line})"
    missing = local_dir / preset.model_file
    if (local_dir / preset.model_file).is_file():
        missing = local_dir / preset.tags_file
    raise ModelNotFoundError(
        f"model {name!r} not found: no {missing}, not in the Hugging Face cache, and "
        f"{reason}. Fetch {' and '.join(preset.files)} from the hub repository "
        f"{preset.repo} and run `{IMPORT_HINT.format(name=name)}`"
    )


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, found in milliseconds; None when it may be.

    Without this, huggingface_hub retries a failed name lookup with backoff for
    about 20 seconds before giving up.
    """
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or ""
    try:
        socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    return None


def available_locally(
    preset: Preset | str, models_dir: Path, *, cache_dir: Path | None = None
) -> bool:
    """True when the model can load without network: imported, or in the hub cache."""
    name = preset if isinstance(preset, str) else preset.name
    try:
        if inspect_dir(Path(models_dir) / name) is not None:
            return True
    except ModelLoadError:
        return False
    entry = get_preset(name) if isinstance(preset, str) else preset
    if entry is None:
        return False
    try:
        _from_hub(entry, cache_dir=cache_dir, local_only=True)
    except Exception:  # noqa: BLE001 - any cache miss means "not available"
        return False
    return True


def _files_to_import(src: Path) -> tuple[str, list[Path]]:
    if src.is_file():
        resolved = _resolve_path(src)
        kind, model_path, tags_path = resolved.kind, resolved.model_path, resolved.tags_path
    else:
        found = inspect_dir(src)
        if found is None:
            raise ModelNotFoundError(_describe_missing(src))
        kind, model_path, tags_path = found
    files = [model_path, tags_path]
    if kind == DEEPDANBOORU:
        files += sorted(tags_path.parent.glob(DEEPDANBOORU_CATEGORY_GLOB))
    return kind, files


def import_model(src_dir: Path, *, name: str, models_dir: Path, overwrite: bool = False) -> Path:
    """Copy a tagger's files into `models_dir/name/`, atomically (temp dir + rename)."""
    src = Path(src_dir).expanduser()
    if not src.exists():
        raise ModelNotFoundError(f"{src}: no such file or directory")
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise TaggerError(f"invalid model name {name!r}: use a plain name such as my-tagger")
    kind, files = _files_to_import(src)
    preset = get_preset(name)
    if preset is not None and preset.kind != kind:
        raise TaggerError(
            f"{src} holds a {kind} model but {name!r} is a {preset.kind} preset; "
            "import it under another name"
        )
    models_dir = Path(models_dir)
    target = models_dir / name
    if target.exists() and not overwrite:
        raise TaggerError(f"{target} already exists; pass overwrite to replace it")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models_dir))
    try:
        for file in files:
            shutil.copy2(file, staging / file.name)
        if target.exists():
            # A directory cannot be replaced in one rename: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=models_dir))
            os.replace(target, old / name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
