"""Read one image file safely: identity, geometry, perceptual hash, generation metadata.

Runs in scan worker processes, so it takes a path and returns plain data. Every
way a file can be bad ends as a `ProbeProblem` with a kind and one-line message;
nothing here raises for a bad file, whatever a decoder throws. Pillow's warnings
about a file ("Corrupt EXIF data", "Palette images with Transparency...") are kept
with the result, never printed.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import imagehash
from PIL import Image, ImageOps, UnidentifiedImageError

from curator.errors import CuratorError
from curator.ingest.infotext import (
    generation_fields,
    is_a1111_infotext,
    parse_infotext,
    parse_novelai_comment,
)
from taggers.pixels import to_rgb

DEFAULT_PIXEL_LIMIT = 178_956_970  # Pillow's own default decompression-bomb bound
MAX_SIDE = 65_535  # wider or taller than any real training image format allows
EXIF_USER_COMMENT = 0x9286
EXIF_IFD = 0x8769
EXIF_ORIENTATION = 0x0112


@dataclass(slots=True)
class ProbeResult:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    format: str
    mode: str
    frames: int
    orientation: int
    phash: int  # unsigned 64-bit
    generation: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    # What a `prepare` hook made of the decoded image (model inputs); never stored.
    prepared: Any = None


@dataclass(slots=True)
class Opened:
    """A probed file as `prepare` hooks see it: bytes read once, pixels decoded once."""

    path: str
    data: bytes
    image: Image.Image  # loaded; a JPEG is draft-decoded (see `drafted`)
    upright: Image.Image  # `image` turned by its EXIF orientation
    original_size: tuple[int, int]  # upright, full-size
    format: str
    drafted: bool  # a JPEG decoded at a reduced DCT scale for the hash


Prepare = Callable[[Opened], Any]


@dataclass(slots=True)
class ProbeProblem:
    path: str
    kind: str
    message: str
    size: int | None = None
    mtime_ns: int | None = None


def probe(
    path: str,
    *,
    pixel_limit: int = DEFAULT_PIXEL_LIMIT,
    max_bytes: int = 1 << 30,
    prepare: Prepare | None = None,
):
    """Probe one file; returns ProbeResult or ProbeProblem, never raises for bad input.

    `prepare` is called with the decoded file (`Opened`) and its return value kept as
    the result's ``prepared``: a scan that also runs models preprocesses the pixels the
    probe decoded instead of reading the file again. It must not raise.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return ProbeProblem(path, "unreadable", exc.strerror or str(exc))
    size, mtime = st.st_size, st.st_mtime_ns

    def problem(kind: str, message: str) -> ProbeProblem:
        return ProbeProblem(path, kind, message, size, mtime)

    if size == 0:
        return problem("empty", "file is empty (0 bytes)")
    if size > max_bytes:
        return problem("too_large", f"file is {size} bytes, over the {max_bytes}-byte limit")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return problem("unreadable", exc.strerror or str(exc))
    try:
        return _probe_bytes(path, data, size, mtime, pixel_limit, prepare)
    except _Bad as bad:
        return problem(bad.kind, bad.message)
    except MemoryError:
        return problem("out_of_memory", "decoding ran out of memory")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - no decoder may end a scan
        return problem(failure_kind(exc), failure_message(exc))


def failure_kind(exc: BaseException) -> str:
    """The problem kind for an exception a decoder raised after the file was identified."""
    text = str(exc).lower()
    if isinstance(exc, NotImplementedError) or (
        isinstance(exc, ValueError | TypeError)
        and any(word in text for word in ("not supported", "unsupported", "unknown", "mode"))
    ):
        return "unsupported"
    if isinstance(exc, EOFError) or "truncated" in text:
        return "truncated"
    return "corrupt"


def failure_message(exc: BaseException) -> str:
    """One line naming the exception, e.g. ``ValueError: point operation not supported``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Bad(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def _probe_bytes(
    path: str, data: bytes, size: int, mtime: int, pixel_limit: int, prepare: Prepare | None
) -> ProbeResult:
    sha = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings(record=True) as caught:
        # Pillow's warnings about odd metadata ("Corrupt EXIF data") would clutter the
        # terminal from every worker: keep them with the result instead.
        warnings.simplefilter("always")
        # Pillow only warns between its limit and twice it; we want a hard, configurable stop.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise _Bad("not_an_image", "not an image Pillow can identify") from None
        except Image.DecompressionBombError as exc:
            raise _Bad("decompression_bomb", str(exc)) from None
        except Image.DecompressionBombWarning as exc:
            raise _Bad("decompression_bomb", str(exc)) from None
        except (ValueError, SyntaxError, zlib.error) as exc:
            raise _Bad(_kind_for(exc), _message(exc)) from None
        except OSError as exc:
            raise _Bad("corrupt", _message(exc)) from None
        with img:
            result, opened = _inspect(path, img, sha, size, mtime, pixel_limit, data)
            if prepare is not None:
                result.prepared = prepare(opened)
        result.warnings = sorted({" ".join(str(w.message).split()) for w in caught})
        return result


def _kind_for(exc: Exception) -> str:
    msg = str(exc)
    if "Too Large" in msg or "too large" in msg:
        return "oversized_metadata"
    return "corrupt"


def _message(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _inspect(
    path: str, img: Image.Image, sha: str, size: int, mtime: int, pixel_limit: int, data: bytes
) -> tuple[ProbeResult, Opened]:
    raw_w, raw_h = img.size
    if raw_w <= 0 or raw_h <= 0 or raw_w > MAX_SIDE or raw_h > MAX_SIDE:
        raise _Bad("bad_dimensions", f"absurd dimensions {raw_w}x{raw_h}")
    if raw_w * raw_h > pixel_limit:
        raise _Bad(
            "decompression_bomb",
            f"{raw_w}x{raw_h} = {raw_w * raw_h} pixels, over the {pixel_limit}-pixel limit",
        )
    fmt = (img.format or "").upper()
    mode = img.mode
    frames = getattr(img, "n_frames", 1)
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        exif = Image.Exif()
    orientation = exif.get(EXIF_ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    generation = _generation(img, exif)

    # Decode everything (truncation shows only here), but let JPEG decode at a
    # reduced scale: the perceptual hash only needs 32x32 pixels.
    drafted = fmt == "JPEG"
    if drafted:
        img.draft("RGB", (max(64, raw_w // 8), max(64, raw_h // 8)))
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise _Bad("decompression_bomb", _message(exc)) from None
    shown = ImageOps.exif_transpose(img) if orientation != 1 else img
    width, height = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else (raw_w, raw_h)
    result = ProbeResult(
        path=path,
        size=size,
        mtime_ns=mtime,
        sha256=sha,
        width=width,
        height=height,
        format=fmt or "UNKNOWN",
        mode=mode,
        frames=frames,
        orientation=orientation,
        phash=perceptual_hash(shown),
        generation=generation,
    )
    return result, Opened(path, data, img, shown, (width, height), fmt, drafted)


def perceptual_hash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash (ImageHash's `phash`, so values match its tools).

    Any mode goes through `to_rgb` first (16-bit and float scaled, transparency on
    white): ImageHash's own ``convert("L")`` would clip a 16-bit image to white.
    """
    if img.mode != "L" or "transparency" in img.info:
        img = to_rgb(img)
    return int(str(imagehash.phash(img)), 16)


def _generation(img: Image.Image, exif: Image.Exif) -> dict[str, Any] | None:
    text = _a1111_text(img, exif)
    if text:
        info = parse_infotext(text)
        return {"source": "a1111", "raw": text, **generation_fields(info)}
    comment = img.info.get("Comment")
    if isinstance(comment, str) and comment.lstrip().startswith("{"):
        try:
            info = parse_novelai_comment(comment, img.info.get("Description"))
        except (ValueError, CuratorError):
            return None
        return {"source": "novelai", "raw": comment, **generation_fields(info)}
    return None


def _a1111_text(img: Image.Image, exif: Image.Exif) -> str | None:
    params = img.info.get("parameters")  # PNG tEXt / iTXt / zTXt
    if isinstance(params, bytes):
        params = params.decode("utf-8", "replace")
    if isinstance(params, str) and params.strip():
        return params
    try:
        comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    except Exception:  # noqa: BLE001
        comment = None
    if comment is None:
        comment = exif.get(EXIF_USER_COMMENT)
    text = decode_user_comment(comment) if isinstance(comment, bytes | str) else None
    # Cameras and screenshot tools write their own comments ("Screenshot"): only text
    # with A1111's parameter line counts as generation parameters.
    return text if text and is_a1111_infotext(text) else None


def decode_user_comment(value: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UTF-16)."""
    if isinstance(value, str):
        return value.strip("\x00")
    prefix, body = value[:8], value[8:]
    if prefix.startswith(b"UNICODE"):
        # The standard leaves byte order to the writer; A1111 (via piexif) writes
        # big-endian. Pick the order whose zero bytes fall where ASCII text puts them.
        be_zeros = body[0::2].count(0)
        le_zeros = body[1::2].count(0)
        codec = "utf-16-le" if le_zeros > be_zeros else "utf-16-be"
        return body.decode(codec, "replace").strip("\x00")
    if prefix.startswith(b"ASCII") or prefix == b"\x00" * 8:
        return body.decode("utf-8", "replace").strip("\x00")
    return value.decode("utf-8", "replace").strip("\x00")
