"""CLIP as models of the run loop: image embeddings and interrogation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, Result
from taggers.clip.banks import EmbeddingCache, default_cache_dir, load_banks, terms_key
from taggers.clip.interrogator import MODES, Interrogator, InterrogatorSettings
from taggers.clip.loading import ClipBundle
from taggers.errors import TaggerError


def _decoded(image: DecodedImage | Image.Image) -> DecodedImage:
    # A bare PIL image is accepted too, for callers that do not build a DecodedImage.
    if isinstance(image, DecodedImage):
        return image
    return DecodedImage(image, image.size, image.format)


def clip_pixels(bundle: ClipBundle, image: DecodedImage | Image.Image) -> np.ndarray:
    """The CLIP input for one image: float32 (3, side, side), transparency on white."""
    return bundle.transform(_decoded(image).rgb()).numpy().astype(np.float32, copy=False)


@dataclass
class ClipEmbedder:
    """Normalised CLIP image embeddings, float16, one per image."""

    clip: ClipBundle
    spec: str
    kind: str = "embedder"

    @property
    def name(self) -> str:
        return self.clip.name

    @property
    def revision(self) -> str:
        return self.clip.revision

    @property
    def input_size(self) -> int:
        return self.clip.input_size

    def preprocess(self, decoded: DecodedImage) -> np.ndarray:
        return clip_pixels(self.clip, decoded)

    def predict(self, batch: list[np.ndarray]) -> list[Result]:
        import torch

        with torch.no_grad():
            model = self.clip.model
            dtype = next(model.parameters()).dtype
            pixels = torch.from_numpy(np.stack(batch)).to(self.clip.torch_device, dtype)
            features = model.encode_image(pixels).float()
            features = features / features.norm(dim=-1, keepdim=True)
        vectors = features.cpu().numpy().astype(np.float16)
        return [Result(embedding=v) for v in vectors]

    def params(self) -> dict[str, Any]:
        return {"spec": self.spec, "dtype": "float16", "device": self.clip.device}


@dataclass
class ClipInterrogatorModel:
    """The interrogator in the run loop: a caption (if a captioner is given) + CLIP terms.

    Its prompt is a caption of kind `interrogation`. Banks are read and their
    embeddings loaded in the process that predicts, never in decode workers.
    """

    clip: ClipBundle
    spec: str
    mode: str = "best"
    captioner: Any = None  # a Model whose Result.caption starts the prompt
    bank_files: dict[str, Path] = field(default_factory=dict)
    cache_dir: Path | None = None
    settings: InterrogatorSettings = field(default_factory=InterrogatorSettings)
    kind: str = "captioner"
    caption_kind: ClassVar[str] = "interrogation"
    _interrogator: Interrogator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TaggerError(
                f"unknown interrogation mode {self.mode!r}; modes: {', '.join(MODES)}"
            )

    @property
    def name(self) -> str:
        return f"interrogator-{self.mode}/{self.clip.name}"

    @property
    def revision(self) -> str:
        parts = [self.clip.revision, self.mode, repr(sorted(vars(self.settings).items()))]
        if self.captioner is not None:
            parts += [self.captioner.name, self.captioner.revision]
        for name, path in sorted(self.bank_files.items()):
            parts.append(f"{name}={terms_key('', [Path(path).read_text(errors='replace')])}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]

    @property
    def input_size(self) -> int | None:
        if self.captioner is None:
            return self.clip.input_size
        other = self.captioner.input_size
        return max(self.clip.input_size, other) if other else None

    @property
    def interrogator(self) -> Interrogator:
        if self._interrogator is None:
            cache = EmbeddingCache(self.cache_dir or default_cache_dir())
            banks = load_banks(self.bank_files)
            self._interrogator = Interrogator(self.clip, banks, cache, self.settings)
        return self._interrogator

    def preprocess(self, decoded: DecodedImage) -> dict[str, Any]:
        decoded = _decoded(decoded)
        caption = self.captioner.preprocess(decoded) if self.captioner is not None else None
        return {"clip": clip_pixels(self.clip, decoded), "caption": caption}

    def predict(self, batch: list[dict[str, Any]]) -> list[Result]:
        import torch

        captions = [""] * len(batch)
        if self.captioner is not None and self.mode != "negative":
            results = self.captioner.predict([item["caption"] for item in batch])
            captions = [r.caption or "" for r in results]
        interrogator = self.interrogator
        features = interrogator.image_features(
            torch.from_numpy(np.stack([b["clip"] for b in batch]))
        )
        return [
            Result(caption=interrogator.interrogate(features[i : i + 1], captions[i], self.mode))
            for i in range(len(batch))
        ]

    def params(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "mode": self.mode,
            "caption_model": None if self.captioner is None else self.captioner.name,
            "banks": {k: str(v) for k, v in self.bank_files.items()},
            **{k: v for k, v in vars(self.settings).items()},
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_interrogator"] = None
        return state
