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


# --- every mode Pillow opens ------------------------------------------------------------


def grey_pattern(w: int, h: int, seed: int) -> np.ndarray:
    """An 8-bit grey picture as an array (distinct per seed)."""
    return np.asarray(pattern(w, h, seed, "L"), dtype=np.uint8)


def write_modes(root: Path) -> dict[str, tuple[str, Image.Image]]:
    """One file per image mode; returns name -> (mode as opened, the 8-bit RGB it shows).

    The expected picture is computed here from the source pixels, independently of the
    conversion under test: 16-bit values are the 8-bit ones times 257, floats the 8-bit
    ones over 255, alpha is composited on white by its formula.
    """
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[str, Image.Image]] = {}
    w, h = 64, 48

    def grey_rgb(values: np.ndarray) -> Image.Image:
        return Image.fromarray(np.repeat(values[..., None], 3, axis=2).astype(np.uint8), "RGB")

    def on_white(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
        a = alpha[..., None].astype(np.float64) / 255
        return Image.fromarray(np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8), "RGB")

    def save(name: str, img: Image.Image, expected: Image.Image, **kw) -> None:
        img.save(root / name, **kw)
        out[name] = (img.mode, expected)

    colour = pattern(w, h, 31)
    rgb = np.asarray(colour, dtype=np.float64)
    grey = grey_pattern(w, h, 32)
    alpha = np.tile(np.linspace(40, 255, w), (h, 1)).astype(np.uint8)

    bilevel = pattern(w, h, 33).convert("1")
    save("mode_1.png", bilevel, bilevel.convert("RGB"))
    save("mode_L.png", Image.fromarray(grey, "L"), grey_rgb(grey))
    la = Image.merge("LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))
    save("mode_LA.png", la, on_white(np.repeat(grey[..., None], 3, axis=2), alpha))
    pal = pattern(w, h, 34).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    save("mode_P.png", pal, pal.convert("RGB"))
    pa = pal.convert("PA")
    pa.putalpha(Image.fromarray(alpha, "L"))
    save("mode_PA.tif", pa, on_white(np.asarray(pal.convert("RGB"), dtype=np.float64), alpha))
    save("mode_RGB.png", colour, colour)
    rgba = colour.copy()
    rgba.putalpha(Image.fromarray(alpha, "L"))
    save("mode_RGBA.png", rgba, on_white(rgb, alpha))
    # CMYK, YCbCr and LAB from the colour picture: Pillow's inverse conversions are what
    # a reader of those files shows (CMYK exactly, the others within rounding).
    save("mode_CMYK.tif", colour.convert("CMYK"), colour)
    save("mode_YCbCr.tif", colour.convert("YCbCr"), colour)
    save("mode_LAB.tif", colour.convert("LAB"), colour)
    wide = grey.astype(np.uint16) * 257  # 8-bit values spread over the 16-bit range
    save("mode_I;16.png", Image.fromarray(wide), grey_rgb(grey))
    save(
        "mode_I;16B.tif",
        Image.frombytes("I;16B", (w, h), wide.astype(">u2").tobytes()),
        grey_rgb(grey),
    )
    save("mode_I.tif", Image.fromarray(wide.astype(np.int32), "I"), grey_rgb(grey))
    save(
        "mode_F.tif",
        Image.fromarray(grey.astype(np.float32) / 255, "F"),
        grey_rgb(grey),
    )
    frames = [pattern(w, h, 35 + i) for i in range(3)]
    frames[0].save(root / "frames.tif", save_all=True, append_images=frames[1:])
    out["frames.tif"] = ("RGB", frames[0])
    frames[0].save(root / "frames.png", save_all=True, append_images=frames[1:])  # APNG
    out["frames.png"] = ("RGB", frames[0])
    frames[0].save(root / "frames.webp", save_all=True, append_images=frames[1:], lossless=True)
    out["frames.webp"] = ("RGB", frames[0])
    # HSV has no file format; the test decoder below opens it from raw bytes.
    hsv = colour.convert("HSV")
    (root / "mode_HSV.png").write_bytes(fault_file("ok", "HSV", hsv.size, hsv.tobytes()))
    out["mode_HSV.png"] = ("HSV", hsv.convert("RGB"))
    return out


# --- a Pillow plugin for fault injection --------------------------------------------------
#
# A file starting with TEST_MAGIC opens as a "CURTEST" image (mode and size from its
# header, pixels raw); its behaviour word decides what loading it does: decode fine,
# raise an exception of a given type, or end the process. Scans register it in every
# decoding process through `ScanOptions(decoder_setup=register_fault_decoder)`.

TEST_MAGIC = b"CURTEST\n"
FAULTS = {
    "ValueError": "unsupported",  # "point operation not supported for this mode"
    "NotImplementedError": "unsupported",
    "TypeError": "corrupt",
    "SyntaxError": "corrupt",
    "OSError": "corrupt",
    "KeyError": "corrupt",
    "RecursionError": "corrupt",
    "MemoryError": "out_of_memory",
    "SystemExit": "corrupt",
}
FAULT_MESSAGES = {"ValueError": "point operation not supported for this mode"}
PALETTE_WARNING = (
    "Palette images with Transparency expressed in bytes should be converted to RGBA images"
)


def fault_file(
    behaviour: str,
    mode: str = "L",
    size: tuple[int, int] = (8, 8),
    data: bytes | None = None,
    log: Path | None = None,
) -> bytes:
    """The bytes of a CURTEST file; ``behaviour`` is ``ok``, ``warn`` (decodes with a
    Pillow-style warning), an exception name in `FAULTS`, ``exit`` (os._exit) or
    ``kill`` (SIGKILL to its own process).

    With ``log``, each decode appends a line to that file first, so a test can count
    how often a file was tried.
    """
    if data is None:
        data = bytes(Image.new(mode, size).tobytes())
    header = f"{behaviour} {mode} {size[0]} {size[1]} {log or '-'}\n".encode()
    return TEST_MAGIC + header + data


def _make_test_image_class():
    from PIL import ImageFile

    class CurTestImageFile(ImageFile.ImageFile):
        format = "CURTEST"
        format_description = "Curator test decoder"

        def _open(self) -> None:
            self.fp.read(len(TEST_MAGIC))
            behaviour, mode, width, height, log = self.fp.readline().decode().split(" ", 4)
            self.behaviour, self.log = behaviour, log.strip()
            self._mode = mode
            self._size = (int(width), int(height))
            offset = self.fp.tell()
            self.tile = [ImageFile._Tile("raw", (0, 0, *self._size), offset, (mode, 0, 1))]

        def load(self):
            if self.log != "-":
                with open(self.log, "a") as fh:
                    fh.write("decoded\n")
            if self.behaviour == "warn":
                import warnings

                warnings.warn(PALETTE_WARNING, stacklevel=2)
            if self.behaviour == "exit":
                os._exit(3)
            if self.behaviour == "kill":
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            if self.behaviour in FAULTS:
                import builtins

                message = FAULT_MESSAGES.get(self.behaviour, f"injected {self.behaviour}")
                raise getattr(builtins, self.behaviour)(message)
            return super().load()

    return CurTestImageFile


def register_fault_decoder() -> None:
    """Register the CURTEST format with Pillow in this process (idempotent)."""
    if "CURTEST" in Image.OPEN:
        return
    cls = _make_test_image_class()
    Image.register_open("CURTEST", cls, lambda prefix: prefix.startswith(TEST_MAGIC))


def jpeg_with_corrupt_exif(path: Path, seed: int = 50) -> None:
    """A JPEG whose EXIF points past its own end: Pillow reads it with a warning."""
    exif = Image.Exif()
    exif[0x010E] = "a description long enough to live outside the IFD"
    raw = bytearray(exif.tobytes())
    entry = raw.find(b"\x01\x0e\x00\x02")
    raw[entry + 8 : entry + 12] = b"\x00\x00\x10\x00"  # its value offset: far past the end
    pattern(48, 48, seed).save(path, "JPEG", exif=bytes(raw), quality=90)


def jpeg_with_comment(path: Path, comment: str, seed: int = 51) -> None:
    """A JPEG whose EXIF UserComment is ``comment`` (as cameras and screenshot tools write)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + comment.encode()
    pattern(48, 48, seed).save(path, "JPEG", exif=exif, quality=90)
