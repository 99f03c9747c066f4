"""One entry point from a model spec to a loaded `Model`.

A spec is a bundled detector name (`nsfw`, `text`, `faces`), a tagger preset name,
a name imported into the models directory, a directory, or an .onnx file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taggers.base import Model
from taggers.errors import TaggerError
from taggers.registry import DEEPDANBOORU, WD14, default_models_dir, get_detector, resolve

# kind → "module:Class"; imported on demand so loading one model never imports the others.
TAGGER_CLASSES: dict[str, str] = {
    WD14: "taggers.wd14:WD14Tagger",
    DEEPDANBOORU: "taggers.deepdanbooru:DeepDanbooruTagger",
}
DETECTOR_CLASSES: dict[str, str] = {
    "nsfw": "taggers.nsfw:NsfwDetector",
    "text": "taggers.text:TextDetector",
    "faces": "taggers.faces:FaceDetector",
}

QUANTIZED_SUBDIR = ".quantized"


def _load_class(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _check_options(cls: Any, spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options the model accepts; unset (None) ones are dropped, unknown ones refused."""
    given = {k: v for k, v in options.items() if v is not None}
    allowed = tuple(getattr(cls, "OPTIONS", ()))
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise TaggerError(
            f"model {spec!r} does not take option(s) {', '.join(unknown)}; it accepts: {accepted}"
        )
    return given


def load_model(
    spec: str,
    *,
    models_dir: Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    quantize: str | None = None,
    offline: bool | None = None,
    cache_dir: Path | None = None,
    **options: Any,
) -> Model:
    """Resolve `spec` and build its model; weights load lazily, on first use.

    `options` are model settings (e.g. general_threshold, character_threshold, mcut for
    WD14; threshold for DeepDanbooru; min_score for text); None values are ignored.
    `cache_dir` is the Hugging Face hub cache (default: huggingface_hub's own).
    """
    if get_detector(spec) is not None and not Path(spec).exists():
        cls = _load_class(DETECTOR_CLASSES[spec])
        if quantize is not None:
            raise TaggerError(f"detector {spec!r} cannot be quantised; drop the quantize option")
        return cls(device=device, threads=threads, **_check_options(cls, spec, options))

    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    resolved = resolve(spec, models_dir=models_dir, offline=offline, cache_dir=cache_dir)
    cls = _load_class(TAGGER_CLASSES[resolved.kind])
    return cls(
        resolved.model_path,
        resolved.tags_path,
        name=resolved.name,
        device=device,
        threads=threads,
        quantize=quantize,
        quantize_cache=models_dir / QUANTIZED_SUBDIR,
        **_check_options(cls, spec, options),
    )
