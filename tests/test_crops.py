"""Crops: cover scaling, centre/random/focal placement, JSON round trips."""

from __future__ import annotations

import hashlib
import itertools
import json
import random

import numpy as np
import pytest
from PIL import Image

from curator.export.crops import (
    Crop,
    CropError,
    center_crop,
    compute_crop,
    cover_scale,
    entropy_offset,
    focal_boxes,
    focal_crop,
    image_seed,
    random_crop,
)

SOURCES = [(1920, 1080), (1080, 1920), (1000, 1000), (4000, 1000), (333, 777), (512, 768)]
BUCKETS = [(512, 768), (768, 512), (576, 576), (1024, 256), (448, 832)]


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def inside(box: tuple[float, float, float, float], crop: Crop, tol: float = 1e-6) -> bool:
    x, y, w, h = box
    return (
        x >= crop.left - tol
        and y >= crop.top - tol
        and x + w <= crop.left + crop.width + tol
        and y + h <= crop.top + crop.height + tol
    )


@pytest.mark.parametrize(("source", "bucket"), itertools.product(SOURCES, BUCKETS))
def test_crop_covers_the_bucket(source: tuple[int, int], bucket: tuple[int, int]) -> None:
    for mode in ("center", "random", "focal"):
        crop = compute_crop(source, bucket, mode, seed=1, sha256=sha(0))
        scaled_w, scaled_h = crop.scaled_size
        assert scaled_w >= bucket[0] and scaled_h >= bucket[1]
        assert scaled_w == bucket[0] or scaled_h == bucket[1]  # no more zoom than needed
        assert crop.scale == pytest.approx(cover_scale(source, bucket))
        assert 0 <= crop.scaled_left <= scaled_w - bucket[0]
        assert 0 <= crop.scaled_top <= scaled_h - bucket[1]
        # The source window has the bucket's aspect and lies inside the source.
        assert crop.width / crop.height == pytest.approx(bucket[0] / bucket[1], rel=0.01)
        assert crop.left >= 0 and crop.left + crop.width <= source[0] + 1e-6
        assert crop.top >= 0 and crop.top + crop.height <= source[1] + 1e-6


def test_center_crop_example() -> None:
    crop = center_crop((1920, 1080), (768, 512))
    assert crop.scale == pytest.approx(512 / 1080)
    assert crop.scaled_size == (910, 512)
    assert (crop.scaled_left, crop.scaled_top) == (71, 0)
    assert crop.left == pytest.approx(71 * 1920 / 910)
    assert crop.width == pytest.approx(768 * 1920 / 910)


def test_matching_aspect_needs_no_crop() -> None:
    crop = center_crop((1024, 1536), (512, 768))
    assert crop.scaled_size == (512, 768)
    assert crop.source_box == pytest.approx((0, 0, 1024, 1536))


def test_random_crop_is_reproducible_and_order_free() -> None:
    images = [(sha(i), (1920 + 7 * i, 1080)) for i in range(30)]
    first = {h: random_crop(size, (512, 512), 42, h) for h, size in images}
    second = {h: random_crop(size, (512, 512), 42, h) for h, size in reversed(images)}
    assert first == second
    assert len({c.scaled_left for c in first.values()}) > 10  # actually spread out
    other_seed = {h: random_crop(size, (512, 512), 43, h) for h, size in images}
    assert other_seed != first


def test_random_crop_covers_the_whole_range() -> None:
    lefts = {random_crop((200, 100), (100, 100), seed, sha(0)).scaled_left for seed in range(2000)}
    assert lefts == set(range(101))


def test_image_seed_depends_on_both_parts() -> None:
    assert image_seed(1, "a") == image_seed(1, "a")
    assert len({image_seed(1, "a"), image_seed(2, "a"), image_seed(1, "b")}) == 3


def test_focal_keeps_every_box_that_fits() -> None:
    rng = random.Random(7)
    for _ in range(300):
        source = (rng.randint(300, 3000), rng.randint(300, 3000))
        bucket = rng.choice(BUCKETS)
        probe = center_crop(source, bucket)
        boxes = []
        for _ in range(rng.randint(1, 3)):
            w = rng.uniform(5, probe.width / 3)
            h = rng.uniform(5, probe.height / 3)
            boxes.append((rng.uniform(0, source[0] - w), rng.uniform(0, source[1] - h), w, h))
        union_w = max(b[0] + b[2] for b in boxes) - min(b[0] for b in boxes)
        union_h = max(b[1] + b[3] for b in boxes) - min(b[1] for b in boxes)
        crop = focal_crop(source, bucket, boxes)
        if union_w <= probe.width and union_h <= probe.height:
            assert all(inside(b, crop) for b in boxes), (source, bucket, boxes, crop)
        else:
            largest = max(boxes, key=lambda b: b[2] * b[3])
            assert inside(largest, crop), (source, bucket, boxes, crop)


def test_focal_centres_a_single_face() -> None:
    # A face near the right of a wide picture: the window moves right, centred on it.
    crop = focal_crop((2000, 1000), (500, 500), [(1400, 400, 100, 100)])
    assert inside((1400, 400, 100, 100), crop)
    assert crop.left + crop.width / 2 == pytest.approx(1450, abs=3)
    # At the edge the window stops at the edge.
    edge = focal_crop((2000, 1000), (500, 500), [(1950, 400, 50, 50)])
    assert edge.left + edge.width == pytest.approx(2000)


def test_focal_keeps_the_largest_when_faces_are_far_apart() -> None:
    small, large = (10, 450, 60, 60), (1800, 400, 150, 150)
    crop = focal_crop((2000, 1000), (500, 500), [small, large])
    assert inside(large, crop) and not inside(small, crop)


def test_focal_boxes_greedy_choice() -> None:
    boxes = [(0, 0, 10, 10), (80, 0, 30, 30), (100, 0, 5, 5), (200, 0, 1, 1)]
    assert focal_boxes(boxes, (40, 40)) == [(80, 0, 30, 30), (100, 0, 5, 5)]
    assert focal_boxes([], (40, 40)) == []
    assert focal_boxes([(0, 0, 100, 100)], (10, 10)) == [(0, 0, 100, 100)]


def test_focal_face_larger_than_window_is_centred() -> None:
    crop = focal_crop((3000, 1000), (500, 500), [(1000, 0, 1200, 1000)])
    assert crop.left + crop.width / 2 == pytest.approx(1600, abs=3)


def test_focal_ignores_boxes_outside_the_image() -> None:
    crop = focal_crop((2000, 1000), (500, 500), [(5000, 5000, 10, 10)])
    assert crop == focal_crop((2000, 1000), (500, 500))


def detailed_right_half(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.full((size[1], size[0]), 128, dtype=np.uint8)
    pixels[:, size[0] * 3 // 4 :] = rng.integers(0, 256, (size[1], size[0] - size[0] * 3 // 4))
    return Image.fromarray(pixels, "L").convert("RGB")


def test_focal_without_boxes_finds_the_detailed_region() -> None:
    image = detailed_right_half((1600, 400))
    crop = focal_crop(image.size, (512, 512), image=image)
    assert crop.left >= 1200 - 2  # the window sits on the noisy quarter
    centre = center_crop(image.size, (512, 512))
    assert crop.left > centre.left


def test_focal_without_boxes_works_on_a_smaller_analysis_copy() -> None:
    image = detailed_right_half((1600, 400))
    small = image.resize((400, 100))
    crop = focal_crop((1600, 400), (512, 512), image=small)
    assert crop.left >= 1200 - 8


def test_focal_on_a_flat_image_is_centred() -> None:
    flat = Image.new("RGB", (1500, 500), (30, 60, 90))
    assert (focal_crop(flat.size, (256, 256), image=flat).scaled_left) == (
        center_crop(flat.size, (256, 256)).scaled_left
    )
    assert (
        focal_crop((1500, 500), (256, 256)).scaled_left
        == center_crop((1500, 500), (256, 256)).scaled_left
    )


def test_entropy_offset_vertical() -> None:
    image = detailed_right_half((400, 1600)).transpose(Image.Transpose.TRANSPOSE)
    x, y = entropy_offset(image, (1.0, 0.25))
    assert x == 0.0
    assert y >= 0.74


def test_crop_round_trips_through_json() -> None:
    for mode in ("center", "random", "focal"):
        crop = compute_crop((1234, 987), (640, 576), mode, seed=3, sha256=sha(1))
        data = json.loads(json.dumps(crop.to_dict()))
        assert Crop.from_dict(data) == crop
        assert data["left"] == pytest.approx(crop.left)
        assert data["scaled"] == {"width": crop.scaled_size[0], "height": crop.scaled_size[1]}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"source": [100, 100], "bucket": [50, 50], "scale": "x", "scaled_left": 0, "scaled_top": 0},
        {"source": [100, 100], "bucket": [50, 50], "scale": 0.1, "scaled_left": 0, "scaled_top": 0},
        {"source": [100, 100], "bucket": [50, 50], "scale": 0.5, "scaled_left": 9, "scaled_top": 0},
        {"source": [0, 100], "bucket": [50, 50], "scale": 0.5, "scaled_left": 0, "scaled_top": 0},
    ],
)
def test_bad_stored_crops_are_rejected(data: dict) -> None:
    with pytest.raises(CropError):
        Crop.from_dict(data)


def test_zoomed_crop_is_allowed() -> None:
    data = {"source": [100, 100], "bucket": [50, 50], "scale": 1.0, "scaled_left": 25}
    crop = Crop.from_dict({**data, "scaled_top": 50})
    assert crop.source_box == pytest.approx((25, 50, 50, 50))


def test_moved_to_clamps_and_marks_manual() -> None:
    crop = center_crop((2000, 1000), (500, 500))
    moved = crop.moved_to(10_000, -5)
    assert (moved.scaled_left, moved.scaled_top) == (500, 0)
    assert moved.mode == "manual"
    assert moved.left + moved.width == pytest.approx(2000)


def test_unknown_mode() -> None:
    with pytest.raises(CropError, match="focal"):
        compute_crop((100, 100), (64, 64), "smart")


def test_a_crop_set_by_hand_frames_the_box_given() -> None:
    crop = Crop.around((1000, 500), (256, 256), (600, 100, 300, 300))
    left, top, width, height = crop.source_box
    assert crop.mode == "manual" and crop.bucket == (256, 256)
    assert abs(left - 600) < 2 and abs(top - 100) < 2 and abs(width - 300) < 2
    # A box of another aspect: centred on the box, covering it on its tighter side.
    wide = Crop.around((1000, 500), (256, 256), (100, 0, 400, 200))
    left, top, width, height = wide.source_box
    assert abs(left + width / 2 - 300) < 2 and width == pytest.approx(height, abs=2)
    with pytest.raises(CropError, match="not inside"):
        Crop.around((1000, 500), (256, 256), (900, 0, 200, 200))
