"""Export image I/O: loading (orientation, draft, modes), crop rendering, atomic writes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from curator.errors import CuratorError, ExportError
from curator.export.crops import Crop, center_crop, focal_crop
from curator.media.imagewrite import (
    UnreadableImageError,
    load_for_export,
    normalize_format,
    render_crop,
    to_export_mode,
    write_image,
)


def smooth(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth colourful picture (gradients and waves) that resizes predictably."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 3, 3)
    channels = [
        127 + 120 * np.sin(xx / w * 5 + phase[0]) * np.cos(yy / h * 3),
        255 * xx / max(1, w - 1),
        127 + 120 * np.cos(yy / h * 7 + phase[2]),
    ]
    return Image.fromarray(np.stack(channels, -1).clip(0, 255).astype(np.uint8), "RGB")


def two_halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    exif[0x010F] = "Camera maker"
    return exif.tobytes()


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


# --- writing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("png", {}),
        ("jpeg", {"quality": 90}),
        ("webp", {"quality": 80}),
        ("webp", {"lossless": True}),
    ],
)
def test_write_is_byte_identical(tmp_path: Path, fmt: str, options: dict) -> None:
    image = smooth((96, 64))
    a = write_image(image, tmp_path / f"a.{fmt}", fmt, **options)
    b = write_image(image.copy(), tmp_path / f"b.{fmt}", fmt, **options)
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as reread:
        assert reread.format == fmt.upper()
        assert reread.size == (96, 64)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_write_strips_metadata_unless_asked(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "source.jpg"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    smooth((64, 48)).save(source, exif=exif_with_orientation(1), icc_profile=icc)
    with Image.open(source) as image:
        image.load()
        assert "exif" in image.info and "icc_profile" in image.info
        plain = write_image(image, tmp_path / f"plain.{fmt}", fmt)
        tagged = write_image(image, tmp_path / f"tagged.{fmt}", fmt, exif=image.info["exif"])
    with Image.open(plain) as reread:
        assert "exif" not in reread.info and "icc_profile" not in reread.info
        assert not reread.getexif()
    with Image.open(tagged) as reread:
        assert reread.getexif().get(0x010F) == "Camera maker"


def test_write_leaves_caller_image_alone(tmp_path: Path) -> None:
    image = smooth((20, 20))
    image.info["comment"] = b"keep me"
    write_image(image, tmp_path / "out.png")
    assert image.info == {"comment": b"keep me"}


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_image(smooth((10, 10)), target)
    with Image.open(target) as reread:
        assert reread.size == (10, 10)


def test_failed_write_leaves_no_temp_file_and_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous export")

    def broken_save(self: Image.Image, fp: io.BufferedWriter, *args: object, **kw: object) -> None:
        fp.write(b"\x89PNG half written")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ExportError, match="disk full") as caught:
        write_image(smooth((10, 10)), target)
    assert isinstance(caught.value, CuratorError)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    assert target.read_bytes() == b"previous export"


def test_interrupted_write_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Image.Image, fp: io.BufferedWriter, *args: object, **kw: object) -> None:
        fp.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(smooth((10, 10)), tmp_path / "out.png")
    assert os.listdir(tmp_path) == []


def test_write_into_missing_folder_is_an_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError):
        write_image(smooth((10, 10)), tmp_path / "missing" / "out.png")


@pytest.mark.parametrize("fmt", ["gif", "tiff", ""])
def test_unknown_format(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(ExportError):
        write_image(smooth((10, 10)), tmp_path / "out", fmt)


def test_format_names() -> None:
    assert [normalize_format(f) for f in ("JPG", ".jpeg", "PNG", "webp")] == [
        "jpeg",
        "jpeg",
        "png",
        "webp",
    ]


def test_bad_quality(tmp_path: Path) -> None:
    with pytest.raises(ExportError):
        write_image(smooth((10, 10)), tmp_path / "out.jpg", "jpeg", quality=0)


# --- modes ---------------------------------------------------------------------------


def half_transparent() -> Image.Image:
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (4, 0, 8, 8))  # right half fully transparent blue
    return image


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_transparency_is_flattened_onto_white_in_every_format(fmt: str) -> None:
    # Trainers convert to RGB; Pillow would give the hidden colour (here blue) or black.
    converted = to_export_mode(half_transparent(), fmt)
    assert converted.mode == "RGB"
    assert converted.getpixel((6, 2)) == (255, 255, 255)
    assert converted.getpixel((1, 2)) == (255, 0, 0)


def test_transparency_is_flattened_onto_a_chosen_background() -> None:
    converted = to_export_mode(half_transparent(), "png", (0, 128, 0))
    assert converted.getpixel((6, 2)) == (0, 128, 0)


def test_opaque_alpha_is_dropped() -> None:
    assert to_export_mode(Image.new("RGBA", (4, 4), (1, 2, 3, 255)), "png").mode == "RGB"


def test_palette_with_transparency() -> None:
    image = half_transparent().convert("P")
    image.info["transparency"] = image.getpixel((6, 2))
    for fmt in ("png", "jpeg"):
        assert to_export_mode(image, fmt).getpixel((6, 2)) == (255, 255, 255)


def test_written_files_have_no_alpha(tmp_path: Path) -> None:
    path = write_image(half_transparent(), tmp_path / "out.png", "png", background=(0, 0, 0))
    with Image.open(path) as written:
        assert written.mode == "RGB" and written.getpixel((6, 2)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("image", "pixel"),
    [
        (Image.new("L", (4, 4), 77), (77, 77, 77)),
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
        (Image.new("LA", (4, 4), (77, 255)), (77, 77, 77)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("P", (4, 4), 0), (0, 0, 0)),
        (Image.new("YCbCr", (4, 4), (255, 128, 128)), (255, 255, 255)),
    ],
)
def test_modes_become_rgb(image: Image.Image, pixel: tuple[int, int, int]) -> None:
    converted = to_export_mode(image, "png")
    assert converted.mode == "RGB"
    assert converted.getpixel((1, 1)) == pixel


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_grey_is_scaled_not_clipped(mode: str) -> None:
    values = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    image = Image.fromarray(values).convert(mode) if mode == "I" else Image.fromarray(values)
    assert image.mode == mode
    converted = to_export_mode(image, "jpeg")
    assert converted.mode == "RGB"
    assert [converted.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


def test_sixteen_bit_png_loads_scaled(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(path)
    assert load_for_export(path).getpixel((0, 0)) == (255, 255, 255)


# --- loading -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rotated{suffix}"
    two_halves((40, 20)).save(path, exif=exif_with_orientation(6), quality=95)
    image = load_for_export(path)
    assert image.size == (20, 40)  # orientation 6: turn 90 degrees clockwise to view
    top = image.getpixel((10, 5))
    bottom = image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_jpeg_draft_decodes_smaller_but_frames_the_same(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    smooth((2000, 1600)).save(path, quality=95)
    crop = center_crop((2000, 1600), (256, 256))
    full = load_for_export(path)
    draft = load_for_export(path, crop.scaled_size)
    assert full.size == (2000, 1600)
    assert draft.size == (1000, 800)  # 1/2 scale: 1/4 would fall below 2x the 320x256 target
    assert mean_diff(render_crop(full, crop), render_crop(draft, crop)) < 2.0


def test_jpeg_draft_respects_orientation(tmp_path: Path) -> None:
    path = tmp_path / "big_rotated.jpg"
    smooth((1600, 2000)).save(path, quality=90, exif=exif_with_orientation(6))
    image = load_for_export(path, (250, 200))  # target in displayed (rotated) terms
    assert image.size == (500, 400)


def test_draft_not_used_when_target_is_close(tmp_path: Path) -> None:
    path = tmp_path / "medium.jpg"
    smooth((800, 600)).save(path, quality=90)
    assert load_for_export(path, (600, 450)).size == (800, 600)


def test_png_alpha_is_flattened_when_loading(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    half_transparent().save(path)
    for fmt in ("png", "jpeg"):
        image = load_for_export(path, output_format=fmt)
        assert image.mode == "RGB" and image.getpixel((6, 2)) == (255, 255, 255)
    assert load_for_export(path, background=(9, 9, 9)).getpixel((6, 2)) == (9, 9, 9)


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    image = load_for_export(path)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 220 and g < 40 and b < 40


def test_srgb_profile_is_converted_away(tmp_path: Path) -> None:
    path = tmp_path / "profiled.png"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = smooth((32, 32))
    source.save(path, icc_profile=icc)
    loaded = load_for_export(path)
    assert mean_diff(loaded, source) < 1.0
    out = write_image(loaded, tmp_path / "out.png")
    with Image.open(out) as reread:
        assert "icc_profile" not in reread.info


@pytest.mark.parametrize(
    "content",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"\xff\xd8\xff\xe0trunc"],
)
def test_unreadable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match="bad.png"):
        load_for_export(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError):
        load_for_export(tmp_path / "nope.jpg")


def test_decompression_bomb_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnreadableImageError):
        load_for_export(path)


# --- rendering -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bucket"),
    [((1200, 800), (512, 512)), ((700, 1300), (448, 832)), ((999, 333), (768, 256))],
)
def test_render_crop_frames_like_resize_then_crop(
    source: tuple[int, int], bucket: tuple[int, int]
) -> None:
    image = smooth(source, seed=3)
    crop = focal_crop(source, bucket, [(source[0] * 0.6, source[1] * 0.3, 50, 50)])
    fast = render_crop(image, crop, reducing_gap=None)
    scaled = image.resize(crop.scaled_size, Image.Resampling.LANCZOS)
    x, y = crop.scaled_left, crop.scaled_top
    slow = scaled.crop((x, y, x + bucket[0], y + bucket[1]))
    assert fast.size == slow.size == bucket
    assert mean_diff(fast, slow) < 1.0
    assert mean_diff(render_crop(image, crop), slow) < 2.0  # with reducing_gap


def test_render_crop_puts_the_window_where_the_crop_says() -> None:
    image = Image.new("RGB", (1000, 500), (0, 0, 0))
    image.paste((255, 255, 255), (700, 0, 1000, 500))  # a white band on the right
    crop = Crop(1000, 500, 250, 250, 0.5, 250, 0)  # scaled 500x250: window x = 250..500
    out = render_crop(image, crop)
    assert out.size == (250, 250)
    assert out.getpixel((10, 100)) == (0, 0, 0)  # source x = 520
    assert out.getpixel((240, 100)) == (255, 255, 255)  # source x = 980
    # The band starts at source x = 700, i.e. output x = (700 - 500) / 2 = 100.
    assert out.getpixel((95, 100))[0] < 10 and out.getpixel((105, 100))[0] > 245


def test_render_crop_other_output_size_and_rgba() -> None:
    image = half_transparent().resize((400, 200))
    crop = center_crop((400, 200), (128, 128))
    preview = render_crop(image, crop, (32, 32))
    assert preview.size == (32, 32) and preview.mode == "RGBA"
    with pytest.raises(ExportError):
        render_crop(image, crop, (0, 32))


def test_round_trip_from_stored_crop(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    smooth((1500, 1000)).save(path, quality=92)
    crop = center_crop((1500, 1000), (512, 512))
    first = write_image(render_crop(load_for_export(path), crop), tmp_path / "a.png")
    again = Crop.from_dict(crop.to_dict())
    second = write_image(render_crop(load_for_export(path), again), tmp_path / "b.png")
    assert first.read_bytes() == second.read_bytes()
