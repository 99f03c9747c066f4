"""Image upscalers for hires fix, named as A1111 names them.

`None`, `Lanczos` and `Nearest` resize with PIL; any other name is a super-resolution
model file (ESRGAN, Real-ESRGAN, SwinIR, HAT, ... as `.pth` or `.safetensors`) in an
upscaler folder, called by its file stem as A1111 lists its ESRGAN folder, and loaded
through spandrel, which recognises the architecture from the weights. `.pth` files are
read with spandrel's restricted unpickler (tensors and plain containers only); `.pt` and
`.ckpt` files, which may be TorchScript or arbitrary pickles, need `allow_pickle`.

A model runs up to three times until the image reaches the target scale, then the
result is resized to the exact size with Lanczos, as A1111's `Upscaler.upscale` does.
Images larger than a tile are upscaled in overlapping tiles (A1111's defaults: 192
pixels, 8 overlapping, blended linearly across the overlap), which bounds the memory a
model needs whatever the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curator.errors import CuratorError

RESIZE_UPSCALERS = {
    "None": Image.Resampling.LANCZOS,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
SAFE_SUFFIXES = (".safetensors", ".pth")
PICKLE_SUFFIXES = (".pt", ".ckpt")
TILE, TILE_OVERLAP = 192, 8  # A1111's ESRGAN_tile and ESRGAN_tile_overlap defaults


class UpscalerError(CuratorError):
    """An upscaler that cannot be found or loaded."""


@dataclass(frozen=True)
class ModelUpscaler:
    name: str
    path: Path


def model_upscalers(folders: list[str], allow_pickle: bool = False) -> dict[str, ModelUpscaler]:
    """Upscaler model files in `folders` (recursively) by file stem; the first one wins."""
    suffixes = SAFE_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
    found: dict[str, ModelUpscaler] = {}
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise UpscalerError(f"upscaler folder {folder} does not exist")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in suffixes and path.is_file():
                found.setdefault(path.stem, ModelUpscaler(path.stem, path))
    return found


def resolve_upscaler(
    name: str, folders: list[str], latent_names: list[str], allow_pickle: bool = False
) -> ModelUpscaler | None:
    """None for a resize upscaler, the model file otherwise; an unknown name is one error
    listing every known name."""
    if name in RESIZE_UPSCALERS:
        return None
    models = model_upscalers(folders, allow_pickle)
    if name in models:
        return models[name]
    known = [*latent_names, *RESIZE_UPSCALERS, *models]
    where = f" (models from {', '.join(folders)})" if folders else " (no --upscaler-dir)"
    raise UpscalerError(f"unknown hires upscaler {name!r}{where}; known: {', '.join(known)}")


class Upscaler:
    """One loaded upscaler; a model is loaded once and reused for every image."""

    def __init__(
        self, name: str, model: ModelUpscaler | None, device: str = "cpu", tile: int = TILE
    ):
        self.name = name
        self.tile = tile  # 0: the whole image at once
        self.descriptor: Any = None
        if model is not None:
            self.descriptor = _load(model, device)

    def upscale(self, image: Image.Image, width: int, height: int) -> Image.Image:
        """`image` at `width`x`height`, as A1111's `resize_image(0, ..., upscaler_name)`."""
        if self.name == "None" or self.name not in RESIZE_UPSCALERS and self.descriptor is None:
            return image.resize((width, height), Image.Resampling.LANCZOS)
        scale = max(width / image.width, height / image.height)
        if scale > 1.0:
            image = self._scale(image, scale)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        return image

    def _scale(self, image: Image.Image, scale: float) -> Image.Image:
        if self.descriptor is None:
            size = (int(image.width * scale), int(image.height * scale))
            return image.resize(size, RESIZE_UPSCALERS[self.name])
        # A1111 rounds the model path's target down to a multiple of 8
        dest_w, dest_h = int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8)
        for _ in range(3):
            if image.width >= dest_w and image.height >= dest_h:
                break
            before = image.size
            image = self._run_model(image)
            if image.size == before:
                break
        if image.size != (dest_w, dest_h):
            image = image.resize((dest_w, dest_h), Image.Resampling.LANCZOS)
        return image

    def _run_model(self, image: Image.Image) -> Image.Image:
        if self.tile <= 0 or (image.width <= self.tile and image.height <= self.tile):
            return self._run_patch(image)
        return _tiled(image, self.tile, TILE_OVERLAP, self._run_patch)

    def _run_patch(self, image: Image.Image) -> Image.Image:
        import torch

        model = self.descriptor
        array = np.asarray(image.convert("RGB"), np.float32) / 255
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None].to(model.device, model.dtype)
        with torch.no_grad():
            out = model(tensor)
        out = out[0].permute(1, 2, 0).float().clamp(0, 1).cpu().numpy()
        return Image.fromarray((out * 255).round().astype(np.uint8))


def _load(model: ModelUpscaler, device: str):
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    try:
        descriptor = ModelLoader(device).load_from_file(model.path)
    except (UnsupportedModelError, ValueError, OSError, RuntimeError, KeyError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UpscalerError(f"cannot load upscaler {model.path.name}: {first}") from error
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.input_channels != 3:
        raise UpscalerError(f"{model.path.name} is not an RGB image upscaler")
    return descriptor.eval()


def _tiled(image: Image.Image, tile: int, overlap: int, run) -> Image.Image:
    """A1111's `split_grid` / `combine_grid`: tiles spread evenly, the last flush with the
    edge; each tile's first `overlap` pixels fade in over the previous one."""
    tile_w, tile_h = min(tile, image.width), min(tile, image.height)
    rows = []
    for y in _starts(image.height, tile_h, overlap):
        rows.append(
            (
                y,
                [
                    (x, run(image.crop((x, y, x + tile_w, y + tile_h))))
                    for x in _starts(image.width, tile_w, overlap)
                ],
            )
        )
    scale = rows[0][1][0][1].width // tile_w
    width, height, lap = image.width * scale, image.height * scale, overlap * scale
    ramp = np.arange(lap, dtype=np.float32) * 255 / lap
    out = Image.new("RGB", (width, height))
    for y, row in rows:
        line = Image.new("RGB", (width, tile_h * scale))
        for x, patch in row:
            if x == 0:
                line.paste(patch, (0, 0))
                continue
            mask = Image.fromarray(np.tile(ramp, (patch.height, 1)).astype(np.uint8), "L")
            line.paste(patch.crop((0, 0, lap, patch.height)), (x * scale, 0), mask=mask)
            line.paste(patch.crop((lap, 0, patch.width, patch.height)), (x * scale + lap, 0))
        if y == 0:
            out.paste(line, (0, 0))
            continue
        mask = Image.fromarray(np.tile(ramp[:, None], (1, width)).astype(np.uint8), "L")
        out.paste(line.crop((0, 0, width, lap)), (0, y * scale), mask=mask)
        out.paste(line.crop((0, lap, width, line.height)), (0, y * scale + lap))
    return out


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    count = max(1, -(-(size - overlap) // (tile - overlap)))
    step = (size - tile) / (count - 1) if count > 1 else 0
    return [min(int(i * step), size - tile) for i in range(count)]
