"""Load a source image for export, render its crop, and write the result.

Loading applies the EXIF orientation, converts the colours to sRGB when the file
carries an ICC profile, and flattens every mode to 8-bit RGB, transparency composited
onto a background (white unless asked otherwise). Writing is atomic (a temporary file in the target
folder, then `os.replace`) and deterministic: no EXIF, ICC profile, text chunk or
timestamp is written unless asked for, so the same pixels give the same bytes.
"""

from __future__ import annotations

import io
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageCms, ImageOps

from curator.errors import ExportError
from curator.export.crops import Crop
from taggers.pixels import WHITE, to_rgb

FORMATS = ("png", "jpeg", "webp")
_FORMAT_ALIASES = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF values that swap width and height
_DRAFT_MARGIN = 2  # decode JPEGs at >= 2x the target so Lanczos does the last step
_SRGB = ImageCms.createProfile("sRGB")


class UnreadableImageError(ExportError):
    """A source image could not be opened or decoded."""


def normalize_format(output_format: str) -> str:
    """``png``, ``jpeg`` or ``webp`` from any case of those names or ``jpg``."""
    try:
        return _FORMAT_ALIASES[output_format.lower().lstrip(".")]
    except KeyError:
        raise ExportError(
            f"unknown image format {output_format!r} (known: {', '.join(FORMATS)})"
        ) from None


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert from the embedded ICC profile to sRGB; leave the image alone if it fails."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return image
    output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    assert converted is not None
    return converted


def to_export_mode(
    image: Image.Image,
    output_format: str = "png",
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """``image`` as 8-bit RGB, transparency flattened onto ``background`` (white by default).

    Trainers convert what they read to RGB, and Pillow's conversion of a transparent
    image gives the hidden colour of every transparent pixel (usually black), so no
    alpha leaves Curator. The conversion is `taggers.pixels.to_rgb` (16-bit and float
    modes scaled, not clipped), the one models and measurements see too.
    """
    normalize_format(output_format)
    return to_rgb(image, background)


def load_for_export(
    path: str | os.PathLike[str],
    target_size: tuple[int, int] | None = None,
    *,
    output_format: str = "png",
    draft_margin: float = _DRAFT_MARGIN,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Open, decode and orient an image, ready for `render_crop`.

    ``target_size`` is the size the whole (oriented) image will be scaled to, e.g.
    `Crop.scaled_size`. JPEGs are then decoded at a reduced size (DCT scaling, 1/2 to
    1/8) that still leaves at least ``draft_margin`` times the target on each side
    (default 2, as Pillow's ``thumbnail`` does), which is much faster for large photos;
    a margin of 1 lets the decoder's own scaling do more of the reduction. The
    returned image may therefore be smaller than the file; `render_crop` scales the
    crop to whatever size it gets. Colours are converted to sRGB and transparency is
    flattened onto ``background`` before any resampling (`to_export_mode`), so edges
    blend with the background, not with the hidden colour of transparent pixels.
    """
    output_format = normalize_format(output_format)
    try:
        with warnings.catch_warnings():
            # Decoder warnings ("Corrupt EXIF data", oversized images below Pillow's
            # bomb error) were recorded with the image when it was scanned
            # (`curator problems --warnings`); here they would only break the progress bar.
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if target_size is not None and image.format == "JPEG":
                    width, height = target_size
                    orientation = image.getexif().get(0x0112, 1)
                    if orientation in _ROTATED_ORIENTATIONS:
                        width, height = height, width
                    margin = max(1.0, draft_margin)
                    image.draft("RGB", (round(width * margin), round(height * margin)))
                image.load()
                oriented = ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow's plugins raise many kinds on bad data
        raise UnreadableImageError(f"cannot read image {os.fspath(path)}: {error}") from error
    return to_export_mode(_to_srgb(oriented), output_format, background)


def render_crop(
    image: Image.Image,
    crop: Crop,
    bucket: tuple[int, int] | None = None,
    *,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
    reducing_gap: float | None = 3.0,
) -> Image.Image:
    """The crop's window of ``image``, resized to ``bucket`` (default: the crop's bucket).

    Only the window is resampled (Pillow's ``resize(box=...)``), which frames exactly
    like scaling the whole image to `Crop.scaled_size` and then cutting the window,
    at a fraction of the cost. ``image`` may be any size with the source's aspect
    (a draft-decoded JPEG, a preview); the window is scaled to it. ``reducing_gap``
    lets Pillow shrink by whole factors first; ``None`` resamples in one pass.
    """
    size = crop.bucket if bucket is None else (int(bucket[0]), int(bucket[1]))
    if size[0] <= 0 or size[1] <= 0:
        raise ExportError(f"output size must be positive, got {size[0]}x{size[1]}")
    fx, fy = image.width / crop.source_width, image.height / crop.source_height
    left, top, width, height = crop.source_box
    box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
    return image.resize(size, resample, box=box, reducing_gap=reducing_gap)


def _save_options(
    output_format: str,
    quality: int,
    lossless: bool,
    exif: bytes | None,
    icc_profile: bytes | None,
    compress_level: int = 6,
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if output_format == "png":
        options.update(optimize=False, compress_level=compress_level)
    elif output_format == "jpeg":
        options.update(quality=quality, optimize=False, progressive=False)
    else:
        options.update(quality=quality, lossless=lossless, method=4)
    if exif:
        options["exif"] = exif
    if icc_profile:
        options["icc_profile"] = icc_profile
    return options


def write_image(
    image: Image.Image,
    path: str | os.PathLike[str],
    format: str = "png",
    quality: int = 95,
    lossless: bool = False,
    *,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    compress_level: int = 6,
    background: tuple[int, int, int] = WHITE,
) -> Path:
    """Write ``image`` to ``path`` atomically and reproducibly; returns the path.

    ``format`` is ``png``, ``jpeg``/``jpg`` or ``webp``; ``quality`` applies to JPEG
    and lossy WebP, ``lossless`` to WebP, ``compress_level`` (0-9) to PNG. Pixels are
    written as RGB, transparency on ``background`` (`to_export_mode`). Nothing but
    pixels is written unless ``exif`` or ``icc_profile`` bytes are given. The file
    appears complete or not at all: it is written to a temporary file beside ``path``
    and renamed over it; on any failure the temporary file is removed and
    `ExportError` raised.
    """
    output_format = normalize_format(format)
    if not 1 <= quality <= 100:
        raise ExportError(f"quality must be between 1 and 100, got {quality}")
    if not 0 <= compress_level <= 9:
        raise ExportError(f"PNG compress level must be between 0 and 9, got {compress_level}")
    target = Path(path)
    pixels = to_export_mode(image, output_format, background)
    if pixels is image:
        pixels = image.copy()
    pixels.info = {}  # Pillow falls back to info (ICC, EXIF, text) for some formats
    options = _save_options(output_format, quality, lossless, exif, icc_profile, compress_level)

    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        # O_EXCL: never write through someone else's file; 0o666 lets the umask decide.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            pixels.save(handle, format=output_format.upper(), **options)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError | ValueError | TypeError):
            raise ExportError(f"cannot write {target}: {error}") from error
        raise
    return target
