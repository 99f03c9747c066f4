"""Image quality signals: sharpness, JPEG quality, resolution class, aesthetic score.

Plain functions over PIL images (or image files); the aesthetic head runs in numpy from
a state dict, so scoring CLIP embeddings needs neither torch nor a GPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from curator.errors import CuratorError
from taggers.pixels import WHITE, to_rgb

ImageSource = Image.Image | str | os.PathLike[str]

SHARPNESS_MAX_SIDE = 1024


class QualityError(CuratorError):
    """A quality signal could not be computed from what was given."""


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    try:
        return Image.open(source)
    except (OSError, Image.DecompressionBombError) as error:
        raise QualityError(f"cannot read image {os.fspath(source)}: {error}") from error


def _grayscale(image: Image.Image) -> Image.Image:
    """8-bit luminance of the image flattened onto white (`taggers.pixels.to_rgb`):
    16-bit images are scaled, not clipped, and a transparent icon is measured as it is
    seen, not as the flat colour hidden under its alpha."""
    return to_rgb(image, WHITE).convert("L")


def sharpness(image: ImageSource, max_side: int = SHARPNESS_MAX_SIDE) -> float:
    """Variance of the Laplacian of the grayscale image; higher is sharper, ~0 is flat.

    The image is first shrunk (box filter) so its longer side is at most `max_side`
    pixels, which keeps the cost bounded and makes values comparable across sizes: the
    same picture at 4096 and at 1024 pixels scores alike. The kernel is the 4-neighbour
    Laplacian [[0,1,0],[1,-4,1],[0,1,0]] with mirrored borders, the same numbers as
    `cv2.Laplacian(gray, cv2.CV_64F).var()` on the shrunk image.
    """
    if max_side < 1:
        raise QualityError(f"max_side must be positive, got {max_side}")
    source = _open(image)
    gray = _grayscale(source)
    if source is not image:
        source.close()
    width, height = gray.size
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)
    pixels = np.asarray(gray, dtype=np.float64)
    if pixels.size == 0:
        return 0.0
    padded = np.pad(pixels, 1, mode="reflect")
    laplacian = (
        padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * pixels
    )
    return float(laplacian.var())


# IJG (libjpeg) base tables from the JPEG standard, Annex K, in natural (row-major) order.
_IJG_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
).ravel()
_IJG_CHROMINANCE = np.full((8, 8), 99, dtype=np.int64)
_IJG_CHROMINANCE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
_IJG_CHROMINANCE = _IJG_CHROMINANCE.ravel()


def _ijg_scale(quality: int) -> int:
    """libjpeg's `jpeg_quality_scaling`: percentage applied to the base tables."""
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def _ijg_table(base: np.ndarray, quality: int, baseline: bool) -> np.ndarray:
    """libjpeg's `jpeg_add_quant_table`: scale, round, clamp to 1..255 (or 32767)."""
    scaled = (base * _ijg_scale(quality) + 50) // 100
    return np.clip(scaled, 1, 255 if baseline else 32767)


def _ijg_qualities() -> dict[tuple[tuple[int, ...], ...], int]:
    """Quality for each table set libjpeg writes: (luminance, chrominance) or (luminance,)."""
    qualities: dict[tuple[tuple[int, ...], ...], int] = {}
    for quality in range(1, 101):
        for baseline in (True, False):
            luminance = tuple(_ijg_table(_IJG_LUMINANCE, quality, baseline).tolist())
            chrominance = tuple(_ijg_table(_IJG_CHROMINANCE, quality, baseline).tolist())
            qualities.setdefault((luminance, chrominance), quality)
            qualities.setdefault((luminance,), quality)
    return qualities


_IJG_QUALITIES: Mapping[tuple[tuple[int, ...], ...], int] = MappingProxyType(_ijg_qualities())


def jpeg_quality(image: ImageSource) -> float | None:
    """Estimate the libjpeg quality setting (1-100) a JPEG was saved with; None if not JPEG.

    When the quantization tables are exactly libjpeg's standard tables scaled for some
    quality (what Pillow, ImageMagick and other libjpeg-based software write),
    that quality is returned exactly. Otherwise (custom tables, e.g. Photoshop) the
    answer is the quality whose scaling factor is the median of the per-coefficient
    factors actual/standard, ignoring coefficients clamped at 1 or 255.
    """
    source = _open(image)
    try:
        tables = getattr(source, "quantization", None)
    finally:
        if source is not image:
            source.close()
    return jpeg_quality_from_tables(tables)


def jpeg_quality_from_tables(tables: Mapping[int, Sequence[int]] | None) -> float | None:
    """`jpeg_quality` from a JPEG's quantisation tables (Pillow's ``image.quantization``)."""
    if not tables:
        return None
    ordered = [np.asarray(list(tables[key]), dtype=np.int64) for key in sorted(tables)]
    if any(table.size != 64 for table in ordered[:2]):
        return None
    actual = ordered[:2]
    exact = _IJG_QUALITIES.get(tuple(tuple(table.tolist()) for table in actual))
    if exact is not None:
        return float(exact)

    bases = [_IJG_LUMINANCE, _IJG_CHROMINANCE][: len(actual)]
    factors = np.concatenate(
        [
            100.0 * table[(table > 1) & (table < 255)] / base[(table > 1) & (table < 255)]
            for table, base in zip(actual, bases, strict=True)
        ]
    )
    if factors.size == 0:  # every coefficient clamped: all 1 (best) or all 255 (worst)
        return 100.0 if int(actual[0].max()) <= 1 else 1.0
    scale = float(np.median(factors))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100.0, max(1.0, quality)))


# Resolution classes by pixel count; a class holds images with fewer pixels than its bound.
RESOLUTION_CLASSES: tuple[tuple[str, int], ...] = (
    ("tiny", 256 * 256),
    ("small", 512 * 512),
    ("sd", 1024 * 1024),
    ("hd", 2048 * 2048),
)


def resolution_class(width: int, height: int) -> str:
    """Name the size class by pixel count, so 512x512 and 384x683 land in the same class.

    tiny: < 256x256 pixels; small: < 512x512; sd: < 1024x1024; hd: < 2048x2048;
    uhd: anything larger.
    """
    if width < 0 or height < 0:
        raise QualityError(f"image size cannot be negative: {width}x{height}")
    pixels = width * height
    for name, bound in RESOLUTION_CLASSES:
        if pixels < bound:
            return name
    return "uhd"


class AestheticHeadError(QualityError):
    """An aesthetic predictor's weights could not be loaded or used."""


_MLP_KEY = re.compile(r"^layers\.(\d+)\.(weight|bias)$")


def _load_state_dict(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as error:
            raise AestheticHeadError(
                f"reading {path} needs safetensors, which is not installed: "
                'pip install -e ".[clip]"'
            ) from error
        return dict(load_file(str(path)))
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            import torch
        except ImportError as error:
            raise AestheticHeadError(
                f'reading {path} needs torch, which is not installed: pip install -e ".[clip]" '
                "(or convert the weights to .safetensors)"
            ) from error
        # weights_only: never unpickle arbitrary objects from a downloaded checkpoint.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise AestheticHeadError(f"{path} does not hold a state dict")
        return {key: value.detach().float().numpy() for key, value in state.items()}
    raise AestheticHeadError(f"unknown weights format {suffix!r} for {path}")


class AestheticHead:
    """A LAION aesthetic predictor over CLIP image embeddings, run in numpy.

    Two architectures are recognised from the state dict's keys:
    - "mlp": the improved-aesthetic-predictor (`layers.{0,2,4,6,7}.*`): Linear(768, 1024),
      Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout, Linear(64, 16),
      Linear(16, 1). The released model has no activations between the layers (its ReLUs
      are commented out) and dropout is the identity at inference, so it is a chain of
      affine maps.
    - "linear": LAION's `sa_0_4_vit_l_14_linear.pth` (`weight`, `bias`): Linear(768, 1).
    Input width follows the weights (768 for ViT-L/14, 1024 for ViT-H/14, ...).
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], kind: str):
        self.layers = layers
        self.kind = kind

    @property
    def input_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> AestheticHead:
        arrays = {key: np.asarray(value, dtype=np.float32) for key, value in state.items()}
        if set(arrays) == {"weight", "bias"}:
            kind, layers = "linear", [(arrays["weight"], arrays["bias"])]
        elif arrays and all(_MLP_KEY.match(key) for key in arrays):
            indices = sorted({int(_MLP_KEY.match(key).group(1)) for key in arrays})
            try:
                layers = [
                    (arrays[f"layers.{i}.weight"], arrays[f"layers.{i}.bias"]) for i in indices
                ]
            except KeyError as error:
                raise AestheticHeadError(f"aesthetic head lacks {error.args[0]}") from error
            kind = "mlp"
        else:
            raise AestheticHeadError(
                "not an aesthetic head: expected keys 'weight'/'bias' or 'layers.N.weight'/"
                f"'layers.N.bias', found {sorted(arrays)[:8]}"
            )
        width = None
        for weight, bias in layers:
            if weight.ndim != 2 or bias.shape != (weight.shape[0],):
                raise AestheticHeadError(f"bad layer shapes {weight.shape} and {bias.shape}")
            if width is not None and weight.shape[1] != width:
                raise AestheticHeadError(f"layer expects {weight.shape[1]} inputs, gets {width}")
            width = weight.shape[0]
        if width != 1:
            raise AestheticHeadError(f"aesthetic head must output one score, outputs {width}")
        return cls(layers, kind)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AestheticHead:
        """Load `.safetensors` (needs safetensors) or `.pth`/`.pt` (needs torch)."""
        path = Path(path)
        if not path.is_file():
            raise AestheticHeadError(f"aesthetic head weights not found: {path}")
        return cls.from_state_dict(_load_state_dict(path))

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores (about 1-10) for a batch (n, dim) or one (dim,) of CLIP image embeddings.

        Embeddings are L2-normalised first, as the heads were trained; returns shape (n,).
        """
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise AestheticHeadError(
                f"expected embeddings of width {self.input_dim}, got shape {np.shape(embeddings)}"
            )
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms == 0, 1, norms)
        for weight, bias in self.layers:
            x = x @ weight.T + bias
        return x[:, 0]
