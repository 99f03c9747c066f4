"""Rendering one image of an export: runs in worker processes, so plain data in and out."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from curator.errors import CuratorError
from curator.export.crops import Box, Crop, compute_crop, cover_scale
from curator.media.imagewrite import load_for_export, render_crop, write_image

# JPEGs decode straight to the smallest DCT scale still covering the target: that
# reduction is a good filter itself, and decoding plus Lanczos on a quarter of the
# pixels is about three times faster than with Pillow's 2x safety margin.
MARGIN = 1.0


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One image to render; plain data so it can travel to a worker process."""

    index: int
    source: str
    sha256: str
    size: tuple[int, int]
    bucket: tuple[int, int]
    output: str
    mode: str
    seed: int
    boxes: tuple[Box, ...] = ()
    crop: dict[str, Any] | None = None
    image_format: str = "png"
    quality: int = 95
    lossless: bool = False
    png_compression: int = 4
    background: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """The crop used and the output's SHA-256, or why the image was skipped.

    ``write_error`` is set when the output could not be written: that fails the whole
    export, unlike a source that cannot be read (``error``), which is skipped.
    """

    index: int
    crop: dict[str, Any] | None = None
    sha256: str | None = None
    error: str | None = None
    write_error: str | None = None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def render(job: RenderJob) -> RenderResult:
    """Decode, crop, resize and write one image; failures come back as a reason."""
    try:
        if file_sha256(job.source) != job.sha256:
            return RenderResult(job.index, error="file changed since it was scanned; rescan it")
        crop = Crop.from_dict(job.crop) if job.crop is not None else None
        if crop is None and (job.mode != "focal" or job.boxes):
            crop = compute_crop(
                job.size, job.bucket, job.mode, seed=job.seed, sha256=job.sha256, boxes=job.boxes
            )
        scaled = crop or Crop(*job.size, *job.bucket, cover_scale(job.size, job.bucket), 0, 0)
        image = load_for_export(
            job.source,
            scaled.scaled_size,
            output_format=job.image_format,
            draft_margin=MARGIN,
            background=job.background,
        )
        if crop is None:  # focal without faces: the most detailed region of the pixels
            crop = compute_crop(job.size, job.bucket, "focal", image=image)
        out = render_crop(image, crop)
    except CuratorError as error:
        return RenderResult(job.index, error=str(error))
    except OSError as error:  # reasons name no paths: they go into the manifest
        return RenderResult(job.index, error=f"cannot read the file: {error.strerror or error}")
    except (ValueError, MemoryError) as error:
        return RenderResult(job.index, error=f"{type(error).__name__}: {error}")
    try:
        write_image(
            out,
            job.output,
            job.image_format,
            job.quality,
            job.lossless,
            compress_level=job.png_compression,
            background=job.background,
        )
        return RenderResult(job.index, crop.to_dict(), file_sha256(job.output))
    except (CuratorError, OSError) as error:
        cause = error.__cause__ if isinstance(error.__cause__, OSError) else error
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        name = os.path.basename(job.output)
        return RenderResult(job.index, write_error=f"cannot write {name}: {reason}")
