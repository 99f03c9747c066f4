"""Every image mode Pillow opens is catalogued with its size, mode and a true perceptual hash."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from sqlalchemy import select

from curator.ingest.probe import perceptual_hash, probe
from curator.ingest.scan import ScanOptions, scan
from db.schema import File, Problem, to_unsigned64
from tests.corpus import grey_pattern, register_fault_decoder, write_modes

# The CMYK, YCbCr and LAB files hold Pillow's conversion of an RGB picture; reading them
# back is exact for CMYK and within rounding for the others, so their hashes may differ
# from the source's by a bit or two. Any wrong conversion (clipping, dropped alpha)
# moves a hash by far more.
CLOSE = 4


def distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def phash_of(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def test_every_mode_is_catalogued_with_a_true_hash(catalog, tmp_path):
    root = tmp_path / "modes"
    expected = write_modes(root)
    summary = scan(catalog, [root], ScanOptions(workers=0, decoder_setup=register_fault_decoder))
    assert summary.problems == 0
    with catalog.session() as s:
        assert s.scalar(select(Problem)) is None
        images = {Path(f.path).name: f.image for f in s.scalars(select(File))}
    assert set(images) == set(expected)
    hashes = {}
    for name, (mode, shown) in expected.items():
        image = images[name]
        assert image.mode == mode, name
        assert (image.width, image.height) == shown.size, name
        hashes[name] = to_unsigned64(image.phash)
        assert distance(hashes[name], phash_of(shown)) <= CLOSE, name
        # A real picture, so a conversion to blank white or black could not match it.
        assert np.asarray(shown).std() > 20, name
    assert len(set(hashes.values())) >= 5
    assert images["frames.tif"].frames == 3
    assert images["frames.png"].frames == 3
    assert images["frames.webp"].frames == 3


def test_16_bit_and_float_hash_like_their_8_bit_source(tmp_path):
    grey = grey_pattern(64, 64, 7)
    source = phash_of(Image.fromarray(grey, "L"))
    deep = Image.fromarray(grey.astype(np.uint16) * 257)
    assert deep.mode == "I;16"
    assert perceptual_hash(deep) == source
    # What clipping to 8 bits would give: almost all white, a different hash.
    assert perceptual_hash(deep) != phash_of(deep.convert("L"))
    floats = Image.fromarray(grey.astype(np.float32) / 255, "F")
    assert perceptual_hash(floats) == source
    path = tmp_path / "deep.png"
    deep.save(path)
    result = probe(str(path))
    assert result.mode == "I;16" and result.phash == source


def test_transparent_pixels_hash_as_white(tmp_path):
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 32, 64))  # left half black, right half clear
    expected = Image.new("RGB", (64, 64), (255, 255, 255))
    expected.paste((0, 0, 0), (0, 0, 32, 64))
    assert perceptual_hash(rgba) == phash_of(expected)
