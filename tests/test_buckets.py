"""Aspect-ratio buckets: the kohya bucket set, assignment, no-upscale, histograms."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from curator.errors import CuratorError, UsageError
from curator.export.buckets import (
    PRESETS,
    BucketError,
    BucketSpec,
    assign_bucket,
    bucket_histogram,
    make_buckets,
    no_upscale_bucket,
    preset,
    render_histogram,
    select_bucket,
)


def reference_buckets(area: int, min_side: int, max_side: int, step: int) -> list[tuple[int, int]]:
    """The rule as sd-scripts states it, written out independently of the module."""
    square = int(math.sqrt(area) / step) * step
    found = [(square, square)]
    for width in range(min_side, max_side + 1, step):
        height = (area // width) - (area // width) % step
        height = height if height < max_side else max_side
        if height >= min_side:
            found += [(width, height), (height, width)]
    return sorted(set(found))


SPECS = {
    "sd15": (PRESETS["sd15"], (512 * 768, 256, 1024, 64)),
    "sdxl": (PRESETS["sdxl"], (1024 * 1024, 512, 2048, 32)),
    "custom-64": (
        BucketSpec(resolution=(768, 1024), min_side=320, max_side=1536, step=64),
        (768 * 1024, 320, 1536, 64),
    ),
    "custom-32": (
        BucketSpec(resolution=(640, 640), min_side=256, max_side=1024, step=32),
        (640 * 640, 256, 1024, 32),
    ),
    "area-only": (BucketSpec(max_area=700 * 700, step=64), (700 * 700, 256, 1024, 64)),
}


@pytest.mark.parametrize("name", SPECS)
def test_bucket_set_matches_the_rule(name: str) -> None:
    spec, (area, min_side, max_side, step) = SPECS[name]
    assert make_buckets(spec) == reference_buckets(area, min_side, max_side, step)


@pytest.mark.parametrize("name", SPECS)
def test_buckets_are_step_multiples_within_area(name: str) -> None:
    spec, _ = SPECS[name]
    for width, height in make_buckets(spec):
        assert width % spec.step == 0 and height % spec.step == 0
        assert width * height <= spec.area
        assert width <= spec.max_side and height <= spec.max_side


def test_sd15_known_buckets() -> None:
    buckets = make_buckets(preset("sd15"))
    # The familiar NovelAI / kohya sizes for a 512x768 area.
    for bucket in [(512, 768), (768, 512), (576, 576), (448, 832), (832, 448), (1024, 384)]:
        assert bucket in buckets
    assert len(buckets) == 19
    assert buckets == sorted(buckets)


def test_presets_are_what_they_say() -> None:
    sdxl = preset("sdxl")
    assert (sdxl.area, sdxl.step, sdxl.min_side, sdxl.max_side) == (1024 * 1024, 32, 512, 2048)
    sd15 = preset("sd15")
    assert (sd15.area, sd15.step, sd15.max_side) == (512 * 768, 64, 1024)
    assert (1024, 1024) in make_buckets(sdxl)


def test_presets_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        PRESETS["sd15"] = BucketSpec(max_area=1)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("sd15").step = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_area": 512 * 512, "resolution": (512, 512)},
        {"resolution": (512, 0)},
        {"resolution": (1280, 512), "max_side": 1024},
        {"max_area": 512 * 512, "step": 0},
        {"max_area": 512 * 512, "min_side": 1024, "max_side": 512},
        {"max_area": 512 * 512, "min_side": 100},
        {"max_area": 512 * 512, "max_side": 1000},
        {"max_area": -5},
    ],
)
def test_bad_specs_are_usage_errors(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        BucketSpec(**kwargs)


def test_unknown_preset() -> None:
    with pytest.raises(UsageError, match="sd15"):
        preset("sd3")


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_assignment_picks_the_nearest_aspect(name: str) -> None:
    buckets = make_buckets(preset(name))
    for width, height in itertools.product(range(200, 4001, 137), range(150, 3001, 149)):
        chosen = assign_bucket(width, height, buckets)
        best = min(abs(w / h - width / height) for w, h in buckets)
        assert abs(chosen[0] / chosen[1] - width / height) == best


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1920, 1080), (832, 448)),
        ((1080, 1920), (448, 832)),
        ((1000, 1000), (576, 576)),
        ((2000, 3000), (512, 768)),
        ((6000, 1000), (1024, 256)),
    ],
)
def test_assignment_examples(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert assign_bucket(*size, make_buckets(preset("sd15"))) == expected


def test_exact_size_wins_over_nearest_aspect() -> None:
    # 600x400 is 1.5 exactly like 768x512, but an exact size is kept as kohya does.
    buckets = [(600, 400), (768, 512)]
    assert assign_bucket(600, 400, buckets) == (600, 400)
    assert assign_bucket(768, 512, buckets) == (768, 512)
    assert assign_bucket(1536, 1024, buckets) == (600, 400)  # first on a tie


def test_assignment_rejects_nonsense() -> None:
    with pytest.raises(BucketError):
        assign_bucket(0, 10, [(512, 512)])
    with pytest.raises(BucketError):
        assign_bucket(10, 10, [])


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((4000, 3000), (704, 512)),  # shrunk to the area, then rounded like kohya
        ((300, 200), (256, 192)),  # small: its own size, rounded down
        ((600, 600), (576, 576)),  # under the area: rounded down only
        ((512, 768), (512, 768)),
    ],
)
def test_no_upscale_examples(size: tuple[int, int], expected: tuple[int, int]) -> None:
    spec = dataclasses.replace(preset("sd15"), no_upscale=True)
    assert no_upscale_bucket(*size, spec) == expected
    assert select_bucket(*size, spec) == expected


def test_no_upscale_never_enlarges() -> None:
    spec = BucketSpec(resolution=(512, 768), no_upscale=True)
    for width, height in itertools.product(range(64, 3000, 97), range(64, 3000, 89)):
        bw, bh = no_upscale_bucket(width, height, spec)
        assert 0 < bw <= width and 0 < bh <= height
        assert bw % 64 == 0 and bh % 64 == 0
        assert bw * bh <= spec.area


def test_no_upscale_rejects_images_smaller_than_a_step() -> None:
    spec = BucketSpec(resolution=(512, 512), no_upscale=True)
    with pytest.raises(BucketError) as caught:
        no_upscale_bucket(50, 300, spec)
    assert isinstance(caught.value, CuratorError)


def test_select_bucket_uses_predefined_set_without_no_upscale() -> None:
    spec = preset("sd15")
    buckets = make_buckets(spec)
    assert select_bucket(300, 200, spec) == assign_bucket(300, 200, buckets) == (768, 512)
    assert select_bucket(300, 200, spec, buckets) == (768, 512)


def test_histogram_counts_and_orders_by_aspect() -> None:
    assignments = [(768, 512)] * 3 + [(512, 768)] * 5 + [(576, 576)]
    assert bucket_histogram(assignments) == [((512, 768), 5), ((576, 576), 1), ((768, 512), 3)]
    assert bucket_histogram([]) == []


def test_render_histogram() -> None:
    text = render_histogram([((512, 768), 10), ((576, 576), 1), ((768, 512), 5)], width=20)
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["512x768", "0.67", "10"]
    assert lines[0].count("#") == 20
    assert lines[1].count("#") == 2  # 1/10 of 20
    assert lines[2].count("#") == 10
    assert render_histogram([]) == "(no images)"
