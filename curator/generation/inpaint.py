"""Inpainting as A1111's img2img tab does it: mask preparation, masked content, only-masked.

The mask is made binary (an RGBA mask's alpha, else its grey levels), optionally inverted,
blurred with OpenCV's Gaussian as A1111 blurs it, then either resized to the output size
("Whole picture") or cropped around the masked area plus padding, widened to the output's
aspect ratio and resized ("Only masked"). Masked content is A1111's `inpainting_fill`:
fill (the masked area painted with blurred surrounding colours), original, latent noise,
latent nothing. Sampling is in `inpaint_sampling`. The result is composited over the
source with the blurred mask, as A1111's overlay does, so unmasked pixels are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from curator.errors import CuratorError

# A1111's "Masked content" choices, in the order of its `inpainting_fill` index
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")


class InpaintError(CuratorError):
    """A mask that cannot be used."""


@dataclass
class PreparedInpaint:
    image: Image.Image  # what is encoded: WxH, filled where masked when asked
    mask: Image.Image  # WxH, "L", binary (A1111 rounds the latent mask)
    overlay: Image.Image  # the source with the unmasked area opaque, RGBA, source size
    paste_to: tuple[int, int, int, int] | None  # (x, y, w, h) in the source: only masked


def load_mask(path: str) -> Image.Image:
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return binary_mask(ImageOps.exif_transpose(image))
    except (OSError, UnidentifiedImageError) as error:
        raise InpaintError(f"cannot read mask {path}: {error}") from error


def binary_mask(image: Image.Image) -> Image.Image:
    """A1111's `create_binary_mask`: a transparent RGBA mask's alpha, thresholded; else grey."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.split()[-1].convert("L").point(lambda v: 255 if v > 128 else 0)
    return image.convert("L")


def blur_mask(mask: Image.Image, blur: int) -> Image.Image:
    """Separable Gaussian, x then y, kernel 2*int(2.5*blur+0.5)+1: A1111's exact call."""
    if blur <= 0:
        return mask
    import cv2  # A1111 blurs with OpenCV; its border handling is part of the result

    size = 2 * int(2.5 * blur + 0.5) + 1
    array = np.array(mask)
    array = cv2.GaussianBlur(array, (size, 1), blur)
    array = cv2.GaussianBlur(array, (1, size), blur)
    return Image.fromarray(array)


def crop_region(mask: np.ndarray, pad: int) -> tuple[int, int, int, int] | None:
    """The box around the non-zero mask plus `pad` pixels, clamped (A1111's
    `get_crop_region`); None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    height, width = mask.shape
    return (
        max(int(cols[0]) - pad, 0),
        max(int(rows[0]) - pad, 0),
        min(int(cols[-1]) + 1 + pad, width),
        min(int(rows[-1]) + 1 + pad, height),
    )


def expand_crop_region(
    region: tuple[int, int, int, int], width: int, height: int, image_w: int, image_h: int
) -> tuple[int, int, int, int]:
    """Widen the box to the output's aspect ratio inside the image (A1111's
    `expand_crop_region`)."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        diff = int((x2 - x1) / (width / height) - (y2 - y1))
        y1 -= diff // 2
        y2 += diff - diff // 2
        if y2 >= image_h:
            y1, y2 = y1 - (y2 - image_h), image_h
        if y1 < 0:
            y2, y1 = y2 - y1, 0
        y2 = min(y2, image_h)
    else:
        diff = int((y2 - y1) * (width / height) - (x2 - x1))
        x1 -= diff // 2
        x2 += diff - diff // 2
        if x2 >= image_w:
            x1, x2 = x1 - (x2 - image_w), image_w
        if x1 < 0:
            x2, x1 = x2 - x1, 0
        x2 = min(x2, image_w)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's `masking.fill`: the masked area painted with ever less blurred copies of
    the unmasked colours."""
    result = Image.new("RGBA", image.size)
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def prepare(
    source: Image.Image,
    mask: Image.Image,
    width: int,
    height: int,
    *,
    blur: int,
    only_masked: bool,
    padding: int,
    content: str,
    invert: bool,
) -> PreparedInpaint:
    """The image to encode, the mask and the overlay, as A1111's img2img `init` makes them."""
    if mask.size != source.size:
        mask = mask.resize(source.size, Image.Resampling.LANCZOS)
    if invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, blur)
    paste_to = None
    if only_masked and (region := crop_region(np.array(mask), padding)) is not None:
        overlay_mask = mask
        x1, y1, x2, y2 = expand_crop_region(region, width, height, *mask.size)
        paste_to = (x1, y1, x2 - x1, y2 - y1)
        work_mask = mask.crop((x1, y1, x2, y2)).resize((width, height), Image.Resampling.LANCZOS)
        image = source.crop((x1, y1, x2, y2)).resize((width, height), Image.Resampling.LANCZOS)
        base = source
    else:
        work_mask = mask.resize((width, height), Image.Resampling.LANCZOS)
        # the overlay lets through twice the blurred mask, so the seam is generated pixels
        overlay_mask = Image.fromarray(
            np.clip(np.array(work_mask, np.float32) * 2, 0, 255).astype(np.uint8)
        )
        image = source.resize((width, height), Image.Resampling.LANCZOS)
        base = image
    overlay = Image.new("RGBa", base.size)
    overlay.paste(base.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(overlay_mask))
    if content != "original":
        image = fill(image, work_mask)
    binary = work_mask.point(lambda v: 255 if v >= 128 else 0)
    return PreparedInpaint(image, binary, overlay.convert("RGBA"), paste_to)


def composite(result: Image.Image, prepared: PreparedInpaint) -> Image.Image:
    """Put the generated pixels under the source's unmasked pixels (A1111's overlay)."""
    if prepared.paste_to is not None:
        x, y, w, h = prepared.paste_to
        base = Image.new("RGBA", prepared.overlay.size)
        base.paste(result.resize((w, h), Image.Resampling.LANCZOS), (x, y))
        result = base
    result = result.convert("RGBA")
    result.alpha_composite(prepared.overlay)
    return result.convert("RGB")


def infotext(blur: int, only_masked: bool, padding: int, content: str, invert: bool) -> dict:
    """The keys A1111 writes; it leaves out defaults (original content, whole picture,
    inpaint masked), which its reader fills back in."""
    values: dict[str, Any] = {}
    if blur > 0:
        values["Mask blur"] = blur
    if invert:
        values["Mask mode"] = "Inpaint not masked"
    if content != "original":
        values["Masked content"] = content
    if only_masked:
        values["Inpaint area"] = "Only masked"
        values["Masked area padding"] = padding
    return values
