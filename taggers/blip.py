"""Captioners through transformers: BLIP (base, large), BLIP-2 and GIT.

The names are clip-interrogator's caption models. A spec is one of those names, a
name imported into the models folder, or a folder saved with `save_pretrained`
(model and processor). Resolution: explicit folder → models_dir/NAME → the Hugging
Face cache → a hub download (unless offline) → a one-line error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, Result
from taggers.errors import ModelLoadError, ModelNotFoundError, TaggerError

CAPTION_MODELS: dict[str, str] = {
    "blip-base": "Salesforce/blip-image-captioning-base",
    "blip-large": "Salesforce/blip-image-captioning-large",
    "blip2-2.7b": "Salesforce/blip2-opt-2.7b",
    "blip2-flan-t5-xl": "Salesforce/blip2-flan-t5-xl",
    "git-large-coco": "microsoft/git-large-coco",
}
IMPORT_HINT = "curator models import DIR --name {name}"


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def resolve_captioner(
    spec: str, *, models_dir: Path, offline: bool | None = None, cache_dir: Path | None = None
) -> tuple[str, Path]:
    """(name, local folder holding config.json, weights and processor files)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path / 'config.json'} is missing: not a captioner folder")
        return path.resolve().name, path
    local = Path(models_dir) / spec
    if (local / "config.json").is_file():
        return spec, local
    repo = CAPTION_MODELS.get(spec)
    if repo is None:
        known = ", ".join(CAPTION_MODELS)
        raise ModelNotFoundError(
            f"unknown caption model {spec!r}: not a folder and not in {models_dir}; "
            f"use one of {known}"
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    try:
        folder = snapshot_download(
            repo, cache_dir=cache_dir, local_files_only=True, allow_patterns=patterns
        )
        if (Path(folder) / "config.json").is_file():
            return spec, Path(folder)
    except Exception:  # noqa: BLE001 - a cache miss falls through to the download
        pass
    if _offline(offline):
        reason = "hub downloads are off (HF_HUB_OFFLINE=1 or offline mode)"
    else:
        try:
            folder = snapshot_download(repo, cache_dir=cache_dir, allow_patterns=patterns)
            return spec, Path(folder)
        except Exception as exc:  # noqa: BLE001 - network errors become one line
            reason = f"the download failed ({_first_line(exc)})"
    raise ModelNotFoundError(
        f"caption model {spec!r} not found: not in {local}, not in the Hugging Face cache, "
        f"and {reason}. Download the hub repository {repo} and run "
        f"`{IMPORT_HINT.format(name=spec)}`"
    )


def _family(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: unreadable ({exc})") from exc
    model_type = config.get("model_type", "")
    if model_type in ("blip", "blip-2", "git"):
        return model_type
    raise ModelLoadError(
        f"{folder}: a {model_type or 'unknown'} model is not a BLIP/BLIP-2/GIT captioner"
    )


@dataclass
class Captioner:
    """A transformers captioner as a model of the run loop (kind `captioner`)."""

    name: str
    folder: Path
    device: str = "auto"
    threads: int | None = None
    num_beams: int = 1
    min_length: int = 5
    max_length: int = 32
    kind: str = "captioner"
    _model: Any = field(default=None, repr=False)
    _processor: Any = field(default=None, repr=False)

    OPTIONS = ("num_beams", "min_length", "max_length")

    def __post_init__(self) -> None:
        self.family = _family(self.folder)
        if self.min_length > self.max_length:
            raise TaggerError("min_length is above max_length")

    @property
    def revision(self) -> str:
        from taggers.clip.loading import weights_revision

        weights = sorted(self.folder.glob("*.safetensors")) or sorted(self.folder.glob("*.bin"))
        if not weights:
            raise ModelNotFoundError(f"{self.folder}: no weights file (.safetensors or .bin)")
        marks = "".join(weights_revision(w) for w in weights)
        settings = f"{self.num_beams},{self.min_length},{self.max_length}"
        import hashlib

        return hashlib.sha256(f"{marks}|{settings}".encode()).hexdigest()[:12]

    @property
    def input_size(self) -> int | None:
        size = getattr(self.processor.image_processor, "size", None)
        if isinstance(size, int):
            return size
        for key in ("height", "shortest_edge"):
            side = getattr(size, key, None) if not isinstance(size, dict) else size.get(key)
            if side:
                return int(side)
        return None

    @property
    def processor(self) -> Any:
        if self._processor is None:
            from transformers import AutoProcessor

            try:
                self._processor = AutoProcessor.from_pretrained(self.folder)
            except Exception as exc:  # noqa: BLE001 - one clear line for the user
                raise ModelLoadError(
                    f"{self.folder}: cannot load the processor ({_first_line(exc)})"
                ) from exc
        return self._processor

    @property
    def torch_device(self) -> str:
        from taggers.clip.loading import pick_device

        return pick_device(self.device)

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from transformers import (
                AutoModelForCausalLM,
                Blip2ForConditionalGeneration,
                BlipForConditionalGeneration,
            )

            if self.threads:
                torch.set_num_threads(self.threads)
            device = self.torch_device
            # GIT stays float32 on a GPU, as clip-interrogator runs it.
            half = device.startswith("cuda") and self.family != "git"
            cls = {
                "blip": BlipForConditionalGeneration,
                "blip-2": Blip2ForConditionalGeneration,
                "git": AutoModelForCausalLM,
            }[self.family]
            from transformers.utils import logging as hf_logging

            # The run loop draws its own progress; transformers' loading bar would interleave.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                model = cls.from_pretrained(
                    self.folder, torch_dtype=torch.float16 if half else torch.float32
                )
            except Exception as exc:  # noqa: BLE001 - one clear line for the user
                raise ModelLoadError(
                    f"{self.folder}: cannot load the model ({_first_line(exc)})"
                ) from exc
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            self._model = model.to(device).eval()
        return self._model

    def preprocess(self, decoded: DecodedImage | Image.Image) -> np.ndarray:
        image = decoded.rgb() if isinstance(decoded, DecodedImage) else decoded.convert("RGB")
        pixels = self.processor(images=image, return_tensors="np")["pixel_values"][0]
        return pixels.astype(np.float32, copy=False)

    def predict(self, batch: list[np.ndarray]) -> list[Result]:
        import torch

        model = self.model
        dtype = next(model.parameters()).dtype
        pixels = torch.from_numpy(np.stack(batch)).to(self.torch_device, dtype)
        with torch.no_grad():
            tokens = model.generate(
                pixel_values=pixels,
                num_beams=self.num_beams,
                min_new_tokens=self.min_length,
                max_new_tokens=self.max_length,
            )
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        return [Result(caption=" ".join(t.split())) for t in texts]

    def params(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "num_beams": self.num_beams,
            "min_length": self.min_length,
            "max_length": self.max_length,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state


def load_captioner(
    spec: str,
    *,
    models_dir: Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    offline: bool | None = None,
    cache_dir: Path | None = None,
    num_beams: int = 1,
    min_length: int = 5,
    max_length: int = 32,
) -> Captioner:
    if models_dir is None:
        from taggers.registry import default_models_dir

        models_dir = default_models_dir()
    name, folder = resolve_captioner(
        spec, models_dir=models_dir, offline=offline, cache_dir=cache_dir
    )
    return Captioner(
        name,
        folder,
        device=device,
        threads=threads,
        num_beams=num_beams,
        min_length=min_length,
        max_length=max_length,
    )
