"""A generated image corpus: formats, modes, orientations, metadata and broken files."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

INFOTEXT = (
    'masterpiece, (best quality:1.2), 1girl, solo, forest, "quoted", café\n'
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, "
    "Size: 512x768, Model hash: 2700c435, Model: anything-v3, Denoising strength: 0.45, "
    'Clip skip: 2, Lora hashes: "foo: 123abc, bar: 456def"'
)


def pattern(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A distinct, structured picture (so perceptual hashes differ between seeds)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy, phase = rng.uniform(1, 6, 3)
    base = np.sin(xx / w * fx * np.pi + phase) * np.cos(yy / h * fy * np.pi)
    blocks = rng.integers(0, 255, (4, 4, 3)).astype(np.float32)
    tile = np.kron(blocks, np.ones((h // 4 + 1, w // 4 + 1, 1)))[:h, :w]
    arr = np.clip(tile * 0.6 + (base[..., None] + 1) * 50, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def user_comment(text: str) -> bytes:
    return b"UNICODE\x00" + text.encode("utf-16-be")


def write_good(root: Path) -> dict[str, Path]:
    """Readable images of many kinds; returns name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **kw)
        out[name] = path

    save("rgb.png", pattern(64, 48, 1))
    save("portrait.jpg", pattern(48, 96, 2), quality=90)
    save("wide.webp", pattern(160, 64, 3), quality=90)
    save(
        "anim.gif",
        pattern(40, 40, 4, "P"),
        save_all=True,
        append_images=[pattern(40, 40, 40, "P")],
        duration=100,
    )
    save("plain.bmp", pattern(32, 32, 5))
    save("scan.tiff", pattern(50, 70, 6))
    rgba = pattern(64, 64, 7).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((64, 64)))
    save("alpha.png", rgba)
    pal = pattern(48, 48, 8).convert("P", palette=Image.Palette.ADAPTIVE)
    save("palette_transparent.png", pal, transparency=0)
    save("gray.png", pattern(40, 60, 9, "L"))
    save("cmyk.jpg", pattern(56, 40, 10).convert("CMYK"), quality=90)
    i16 = Image.fromarray((np.arange(64 * 32).reshape(32, 64) * 30).astype(np.uint16))
    save("deep16.png", i16)
    # EXIF orientation 6: stored 80x40, displayed 40x80.
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", pattern(80, 40, 11), exif=exif, quality=90)
    # A1111 infotext in a PNG tEXt chunk, in an iTXt chunk, and in JPEG EXIF UserComment.
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    save("sub/a1111.png", pattern(64, 96, 12), pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", INFOTEXT)
    save("sub/a1111_itxt.png", pattern(64, 96, 13), pnginfo=info)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = user_comment(INFOTEXT)
    save("sub/a1111.jpg", pattern(64, 96, 14), exif=exif, quality=90)
    # NovelAI writes a JSON Comment chunk.
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "1girl, solo")
    info.add_text(
        "Comment",
        '{"prompt": "1girl, solo", "steps": 28, "sampler": "k_euler_ancestral", '
        '"seed": 42, "scale": 11, "uc": "lowres", "width": 512, "height": 768}',
    )
    info.add_text("Software", "NovelAI")
    save("sub/novelai.png", pattern(64, 96, 15), pnginfo=info)
    # A caption sidecar beside an image.
    save("sub/captioned.png", pattern(64, 64, 16))
    (root / "sub/captioned.txt").write_text("long hair, smile, \\(cosplay\\), blue sky")
    return out


def write_bad(root: Path) -> dict[str, str]:
    """Broken files; returns name -> the problem kind a scan must record."""
    root.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    (root / "empty.png").write_bytes(b"")
    kinds["empty.png"] = "empty"
    buf = io.BytesIO()
    pattern(256, 256, 20).save(buf, "JPEG", quality=95)
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    kinds["truncated.jpg"] = "truncated"
    buf = io.BytesIO()
    pattern(256, 256, 21).save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    kinds["truncated.png"] = "truncated"
    (root / "notes.png").write_text("this is not an image\n")
    kinds["notes.png"] = "not_an_image"
    (root / "fake.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPjunk" + os.urandom(64))
    kinds["fake.webp"] = "not_an_image"
    (root / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    kinds["bomb.png"] = "decompression_bomb"
    (root / "absurd.png").write_bytes(png_header_only(1_000_000, 1))
    kinds["absurd.png"] = "bad_dimensions"
    (root / "bigtext.png").write_bytes(png_with_text_chunk(b"parameters", 2_000_000))
    kinds["bigtext.png"] = "oversized_metadata"
    return kinds


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def png_with_text_chunk(key: bytes, size: int) -> bytes:
    """A small valid PNG with a zTXt chunk that inflates to `size` bytes."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00")
    ztxt = key + b"\x00\x00" + zlib.compress(b"a" * size)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"zTXt", ztxt)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
