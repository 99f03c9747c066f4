"""Descriptions written into PNG, JPEG and WebP copies with the pixel data byte-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator.describe.metadata import (
    _jpeg_segments,
    _png_chunks,
    _riff_chunks,
    write_description,
)
from curator.errors import UsageError

TEXT = "A red fox in snow. The image contains the text: “Café & <Co>”."


def _picture(mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(3)
    channels = 4 if mode == "RGBA" else 3
    return Image.fromarray(rng.integers(0, 255, (40, 56, channels), dtype=np.uint8), mode)


def _pixels_identical(before: Path, after: Path) -> None:
    with Image.open(before) as a, Image.open(after) as b:
        assert a.size == b.size and a.mode == b.mode
        assert a.tobytes() == b.tobytes()


def test_png_gets_itxt_and_xmp_and_the_same_image_data(tmp_path):
    src = tmp_path / "a.png"
    img = _picture("RGBA")
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a fox, Steps: 20")
    img.save(src, pnginfo=info)
    before = src.read_bytes()
    out = write_description(src, TEXT)
    assert src.read_bytes() == before  # the original is never touched
    assert out == tmp_path / "a.described.png"
    idat = [b for k, b in _png_chunks(before) if k == b"IDAT"]
    assert [b for k, b in _png_chunks(out.read_bytes()) if k == b"IDAT"] == idat
    with Image.open(out) as described:
        assert described.text["Description"] == TEXT
        assert described.text["parameters"] == "a fox, Steps: 20"
        assert "Café &amp; &lt;Co&gt;" in described.info["XML:com.adobe.xmp"]
    _pixels_identical(src, out)
    # Writing again replaces rather than piles up.
    again = write_description(out, "Second.", in_place=True)
    keys = [b.split(b"\0", 1)[0] for k, b in _png_chunks(again.read_bytes()) if k == b"iTXt"]
    assert keys.count(b"Description") == 1


def test_jpeg_keeps_its_entropy_coded_data_and_exif(tmp_path):
    src = tmp_path / "b.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "Camera Maker"
    _picture().save(src, quality=87, exif=exif.tobytes())
    before = src.read_bytes()
    out = write_description(src, TEXT, output_dir=tmp_path / "described")
    assert out == tmp_path / "described" / "b.jpg"
    after = out.read_bytes()
    assert _jpeg_segments(after)[1] == _jpeg_segments(before)[1]  # scan data, byte for byte
    with Image.open(out) as described:
        tags = described.getexif()
        assert tags[0x010E] == TEXT.encode("ascii", "replace").decode()
        assert tags[0x0112] == 6 and tags[0x010F] == "Camera Maker"
        assert "Café &amp; &lt;Co&gt;" in described.info["xmp"].decode("utf-8")
    _pixels_identical(src, out)


def test_webp_gets_an_xmp_chunk_and_the_same_bitstream(tmp_path):
    for lossless, mode in ((False, "RGB"), (True, "RGBA")):
        src = tmp_path / f"c{int(lossless)}.webp"
        _picture(mode).save(src, lossless=lossless, quality=80)
        before = src.read_bytes()
        out = write_description(src, TEXT)
        image_chunks = {b"VP8 ", b"VP8L", b"ALPH"}
        old = [(k, b) for k, b in _riff_chunks(before) if k in image_chunks]
        new = [(k, b) for k, b in _riff_chunks(out.read_bytes()) if k in image_chunks]
        assert old == new
        with Image.open(out) as described:
            xmp = described.info["xmp"]
            assert "Café &amp; &lt;Co&gt;" in (xmp.decode() if isinstance(xmp, bytes) else xmp)
        _pixels_identical(src, out)


def test_in_place_only_when_asked_and_other_formats_refused(tmp_path):
    src = tmp_path / "d.png"
    _picture().save(src)
    with pytest.raises(UsageError):
        write_description(src, TEXT, output_dir=tmp_path)
    write_description(src, TEXT, in_place=True)
    with Image.open(src) as img:
        assert img.text["Description"] == TEXT
    gif = tmp_path / "e.gif"
    _picture().convert("P").save(gif)
    with pytest.raises(UsageError, match="GIF"):
        write_description(gif, TEXT)
