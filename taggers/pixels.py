"""Any Pillow image mode to 8-bit RGB: the one conversion models, probe, quality and export use.

Pillow's own ``convert("RGB")`` is right for most modes (1, L, P, RGB, CMYK, YCbCr, LAB,
HSV) but clips high-bit-depth modes: a 16-bit grey gradient (``I;16``, ``I;16B``, or
``I`` as 16-bit PNGs open) becomes almost pure white, and a float image in 0..1 almost
black. Those are scaled to 0..255 here. Transparency (an alpha band, or a palette or
single colour marked transparent) is composited onto ``background``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` carries transparency (an alpha band, a transparent colour, or
    a palette with alpha)."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    palette = image.palette if image.mode == "P" else None
    return palette is not None and palette.mode == "RGBA"


def _scaled_grey(image: Image.Image) -> Image.Image:
    """High-bit-depth grey (I;16*, I, F) scaled into 8-bit L rather than clipped."""
    if image.mode.startswith("I;16"):
        # Integer arithmetic: 4 bytes a pixel, where floats would take 8 on a huge scan.
        # v/257 never lies halfway between integers, so this rounds as rint would.
        wide = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    values = np.asarray(image, dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode == "F":
        top = float(values.max(initial=0.0))
        # Float images are 0..1 by convention; larger ones are read as 8 or 16 bit, and
        # beyond that scaled to their own maximum rather than clipped to white.
        if top <= 1.0:
            scale = 255.0
        elif top <= 255.0:
            scale = 1.0
        else:
            scale = 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
    else:  # "I": 8-bit or 16-bit data (16-bit PNGs open so), rarely the full 32 bits
        top = float(values.max(initial=0.0))
        scale = 1.0 if top <= 255.0 else 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """An 8-bit RGB image of ``image`` with transparency composited onto ``background``.

    Returns ``image`` itself when it is already plain RGB without transparency.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        grey = _scaled_grey(image)
        key = image.info.get("transparency")
        if not isinstance(key, int | float):
            return grey.convert("RGB")
        # A 16-bit PNG's tRNS names one grey value (in the file's own range) as clear.
        alpha = np.where(np.asarray(image) == key, 0, 255).astype(np.uint8)
        image, mode = Image.merge("LA", (grey, Image.fromarray(alpha, "L"))), "LA"
    if not has_alpha(image):
        return image.convert("RGB")
    if mode == "La":  # premultiplied grey+alpha, which Pillow cannot convert: undo it here
        grey, alpha = (np.asarray(band, dtype=np.float64) for band in image.split())
        straight = np.where(alpha > 0, grey * 255.0 / np.maximum(alpha, 1), 0)
        grey_band = Image.fromarray(np.clip(np.rint(straight), 0, 255).astype(np.uint8), "L")
        image = Image.merge("LA", (grey_band, image.split()[1]))
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def parse_colour(text: str) -> tuple[int, int, int]:
    """``white``, ``black``, ``#rrggbb`` or ``r,g,b`` as an RGB triple (for ``--background``)."""
    from PIL import ImageColor

    text = text.strip()
    try:
        if "," in text:
            parts = tuple(int(p) for p in text.split(","))
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError
            return parts  # type: ignore[return-value]
        return ImageColor.getrgb(text)[:3]  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"not a colour: {text!r} (use a name, #rrggbb or r,g,b)") from None
