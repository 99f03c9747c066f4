"""`taggers.pixels.to_rgb`: every Pillow mode to 8-bit RGB, checked against known pixel values."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from taggers.pixels import has_alpha, parse_colour, to_rgb

BLUEISH = (0, 128, 255)


def pixels(image: Image.Image) -> np.ndarray:
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == image.size
    return np.asarray(out, dtype=np.int64)


def row(values, mode: str) -> Image.Image:
    """A one-row image of ``values`` in ``mode`` (a grey level or a band tuple per pixel)."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    im = Image.new(mode, (len(values), 1))
    for x, v in enumerate(values):
        im.putpixel((x, 0), v if bands > 1 or not isinstance(v, tuple) else v[0])
    return im


def test_plain_rgb_is_returned_as_is():
    im = Image.new("RGB", (3, 2), (1, 2, 3))
    assert to_rgb(im) is im


def test_bilevel_and_grey():
    one = row([0, 1], "1")
    assert pixels(one)[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    grey = row([0, 37, 255], "L")
    assert pixels(grey)[0].tolist() == [[0, 0, 0], [37, 37, 37], [255, 255, 255]]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_grey_is_scaled_not_clipped(mode):
    values = [0, 257, 32768, 65535]
    dtype = ">u2" if mode == "I;16B" else "<u2"
    im = Image.frombytes(mode, (4, 1), np.array([values], dtype=dtype).tobytes())
    assert im.mode == mode
    assert pixels(im)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_16_bit_gradient_keeps_its_range():
    gradient = (np.arange(256 * 4).reshape(4, 256) * 64).astype(np.uint16)  # 0..65472
    im = Image.fromarray(gradient)
    out = pixels(im)[..., 0]
    assert out.min() == 0 and out.max() >= 254
    # Monotone across the gradient, and far from the all-white that clipping gives.
    flat = out.reshape(-1)
    assert (np.diff(flat) >= 0).all() and len(np.unique(flat)) > 200


def test_32_bit_int_holding_8_or_16_bit_data():
    eight = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I")
    assert pixels(eight)[0, :, 0].tolist() == [0, 100, 255]
    sixteen = Image.fromarray(np.array([[0, 256, 65535]], dtype=np.int32), "I")
    assert pixels(sixteen)[0, :, 0].tolist() == [0, 1, 255]
    negative = Image.fromarray(np.array([[-5, 0, 10]], dtype=np.int32), "I")
    assert pixels(negative)[0, :, 0].tolist() == [0, 0, 10]
    wide = Image.fromarray(np.array([[0, 1 << 20, 1 << 24]], dtype=np.int32), "I")
    assert pixels(wide)[0, :, 0].tolist() == [0, 16, 255]


def test_float_images():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert pixels(unit)[0, :, 0].tolist() == [0, 128, 255]
    byte_range = Image.fromarray(np.array([[0.0, 100.0, 255.0]], dtype=np.float32), "F")
    assert pixels(byte_range)[0, :, 0].tolist() == [0, 100, 255]
    odd = Image.fromarray(np.array([[np.nan, -1.0, 0.25, np.inf]], dtype=np.float32), "F")
    assert pixels(odd)[0, :, 0].tolist() == [0, 0, 64, 0]


def composite(value: float, alpha: int, background: float) -> float:
    return (value * alpha + background * (255 - alpha)) / 255


@pytest.mark.parametrize("background", [(255, 255, 255), BLUEISH])
def test_rgba_is_composited_on_the_background(background):
    im = row([(200, 10, 50, 255), (200, 10, 50, 0), (200, 10, 50, 128)], "RGBA")
    out = np.asarray(to_rgb(im, background), dtype=np.int64)[0]
    assert out[0].tolist() == [200, 10, 50]
    assert out[1].tolist() == list(background)
    expected = [composite(c, 128, b) for c, b in zip((200, 10, 50), background, strict=True)]
    assert np.abs(out[2] - expected).max() <= 1


@pytest.mark.parametrize("background", [(255, 255, 255), BLUEISH])
def test_grey_alpha_is_composited(background):
    im = row([(100, 255), (100, 0), (100, 64)], "LA")
    out = np.asarray(to_rgb(im, background), dtype=np.int64)[0]
    assert out[0].tolist() == [100, 100, 100]
    assert out[1].tolist() == list(background)
    expected = [composite(100, 64, b) for b in background]
    assert np.abs(out[2] - expected).max() <= 1


def test_premultiplied_modes():
    # La and RGBa store colour already multiplied by alpha: 50 at alpha 100 is grey 127.5.
    la = Image.new("La", (1, 1), (50, 100))
    out = np.asarray(to_rgb(la, (0, 0, 0)), dtype=np.int64)[0, 0]
    assert np.abs(out - 50).max() <= 1
    rgba = Image.new("RGBa", (1, 1), (50, 25, 0, 100))
    out = np.asarray(to_rgb(rgba, (0, 0, 0)), dtype=np.int64)[0, 0]
    assert np.abs(out - [50, 25, 0]).max() <= 1


def palette_image() -> Image.Image:
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    for x in range(3):
        im.putpixel((x, 0), x)
    return im


def test_palette_without_and_with_transparency():
    im = palette_image()
    assert pixels(im)[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    im.info["transparency"] = 1  # one clear index
    assert np.asarray(to_rgb(im, BLUEISH))[0].tolist() == [
        [255, 0, 0],
        list(BLUEISH),
        [0, 0, 255],
    ]
    im.info["transparency"] = bytes([255, 0, 128])  # per-index alpha, as PNG tRNS stores it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow suggests RGBA for this; we composite anyway
        out = np.asarray(to_rgb(im), dtype=np.int64)[0]
    assert out[0].tolist() == [255, 0, 0] and out[1].tolist() == [255, 255, 255]
    assert np.abs(out[2] - [composite(0, 128, 255), composite(0, 128, 255), 255]).max() <= 1


def test_palette_with_alpha_in_the_palette():
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 255, 0, 0, 255, 0], "RGBA")
    im.putpixel((1, 0), 1)
    assert has_alpha(im)
    assert np.asarray(to_rgb(im, BLUEISH))[0].tolist() == [[255, 0, 0], list(BLUEISH)]


def test_palette_alpha_mode():
    im = palette_image().convert("PA")
    im.putpixel((0, 0), (0, 0))
    out = np.asarray(to_rgb(im, BLUEISH))[0].tolist()
    assert out == [list(BLUEISH), [0, 255, 0], [0, 0, 255]]


def test_colour_key_transparency_in_rgb_and_grey():
    rgb = row([(10, 20, 30), (40, 50, 60)], "RGB")
    rgb.info["transparency"] = (10, 20, 30)
    assert np.asarray(to_rgb(rgb, BLUEISH))[0].tolist() == [list(BLUEISH), [40, 50, 60]]
    grey = row([7, 9], "L")
    grey.info["transparency"] = 7
    assert np.asarray(to_rgb(grey))[0].tolist() == [[255, 255, 255], [9, 9, 9]]


def test_16_bit_grey_with_a_transparent_value():
    im = Image.fromarray(np.array([[1000, 65535]], dtype=np.uint16))
    im.info["transparency"] = 1000
    assert np.asarray(to_rgb(im, BLUEISH))[0].tolist() == [list(BLUEISH), [255, 255, 255]]


@pytest.mark.parametrize(
    ("mode", "value", "rgb"),
    [
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("CMYK", (255, 0, 255, 0), (0, 255, 0)),
        ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("HSV", (85, 255, 255), (0, 255, 0)),
        ("HSV", (170, 255, 255), (0, 0, 255)),
        ("HSV", (0, 0, 128), (128, 128, 128)),
        ("LAB", (255, 128, 128), (255, 255, 255)),  # L*=100, a*=b*=0
        ("LAB", (0, 128, 128), (0, 0, 0)),
        ("LAB", (138, 208, 195), (255, 0, 0)),  # sRGB red is about L*54 a*80 b*67
    ],
)
def test_colour_spaces(mode, value, rgb):
    out = pixels(Image.new(mode, (1, 1), value))[0, 0]
    assert np.abs(out - rgb).max() <= 12, (mode, value, out)


def test_cmyk_jpeg_round_trip_keeps_colours():
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    opened = Image.open(io.BytesIO(buf.getvalue()))
    assert opened.mode == "CMYK"
    out = pixels(opened)[8, 8]
    assert np.abs(out - [255, 0, 0]).max() <= 8


def test_to_rgb_leaves_the_input_alone():
    im = row([(1, 2, 3, 4)], "RGBA")
    to_rgb(im)
    assert im.mode == "RGBA" and im.getpixel((0, 0)) == (1, 2, 3, 4)


def test_parse_colour():
    assert parse_colour("white") == (255, 255, 255)
    assert parse_colour("#0080ff") == BLUEISH
    assert parse_colour(" 0,128,255 ") == BLUEISH
    with pytest.raises(ValueError, match="not a colour"):
        parse_colour("1,2")
