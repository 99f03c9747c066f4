"""Aspect-ratio buckets, compatible with kohya-ss sd-scripts.

A bucket is a ``(width, height)`` training resolution. Images are grouped into
buckets of roughly constant pixel area so that a batch shares one shape while
portrait and landscape pictures keep most of their content.

The bucket set follows sd-scripts' ``make_bucket_resolutions``:

* the square bucket of side ``floor(sqrt(area) / step) * step``;
* for every width ``w`` in ``min_side, min_side + step, ..., max_side`` the height
  ``h = min(max_side, floor(floor(area / w) / step) * step)``, kept when
  ``h >= min_side``, together with its transpose ``(h, w)``;
* deduplicated and sorted as ``(width, height)`` tuples.

Assignment follows sd-scripts' ``BucketManager.select_bucket``: an image whose exact
size is a bucket goes there, otherwise to the bucket with the smallest absolute
aspect-ratio error ``|bw / bh - w / h|`` (the first such bucket in sorted order on a
tie). With ``no_upscale`` the predefined set is not used at all: the bucket is
derived from the image itself so that it is never enlarged (see `no_upscale_bucket`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from curator.errors import CuratorError, UsageError

Bucket = tuple[int, int]


class BucketError(CuratorError):
    """An image cannot be placed in any bucket (for example, smaller than one step)."""


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """How buckets are made: give ``max_area`` or ``resolution`` (W, H), not both.

    ``resolution`` means ``area = W * H`` (kohya's ``--resolution``). ``min_side``,
    ``max_side`` and ``step`` are kohya's ``--min_bucket_reso``, ``--max_bucket_reso``
    and ``--bucket_reso_steps``; ``no_upscale`` is ``--bucket_no_upscale``.
    """

    max_area: int | None = None
    resolution: tuple[int, int] | None = None
    min_side: int = 256
    max_side: int = 1024
    step: int = 64
    no_upscale: bool = False

    def __post_init__(self) -> None:
        if (self.max_area is None) == (self.resolution is None):
            raise UsageError("give either a bucket max_area or a resolution (W, H), not both")
        if self.resolution is not None:
            width, height = self.resolution
            if width <= 0 or height <= 0:
                raise UsageError(f"bucket resolution must be positive, got {width}x{height}")
            if max(width, height) > self.max_side:
                raise UsageError(
                    f"bucket max side {self.max_side} is smaller than the resolution "
                    f"{width}x{height}"
                )
            if min(width, height) < self.min_side:
                # sd-scripts asserts min(resolution) >= min_bucket_reso.
                raise UsageError(
                    f"bucket min side {self.min_side} is larger than the resolution "
                    f"{width}x{height}"
                )
        if self.area <= 0:
            raise UsageError(f"bucket area must be positive, got {self.area}")
        if self.step < 1:
            raise UsageError(f"bucket step must be at least 1, got {self.step}")
        if self.min_side < self.step or self.min_side > self.max_side:
            raise UsageError(
                f"bucket sides must satisfy step <= min <= max, got step {self.step}, "
                f"min {self.min_side}, max {self.max_side}"
            )
        if self.min_side % self.step or self.max_side % self.step:
            raise UsageError(
                f"bucket min side {self.min_side} and max side {self.max_side} must be "
                f"multiples of the step {self.step}"
            )

    @property
    def resolution_pair(self) -> tuple[int, int]:
        """The ``(W, H)`` with ``W * H == area`` that trainer configs are given.

        sd-scripts uses only the product (its bucket area) and requires
        ``min_bucket_reso <= min(W, H)`` and ``max(W, H) <= max_bucket_reso``; an
        area that is not a perfect square is written as its most nearly square
        factor pair within those sides, so the trainer's area is exactly ours.
        """
        if self.resolution is not None:
            return self.resolution
        pair = _factor_pair(self.area, self.min_side, self.max_side)
        if pair is None:
            raise UsageError(
                f"bucket max area {self.area} is not W x H for any sides between "
                f"{self.min_side} and {self.max_side}; give resolution=(W, H) instead"
            )
        return pair

    @property
    def area(self) -> int:
        """The target pixel area of every bucket."""
        if self.resolution is not None:
            return self.resolution[0] * self.resolution[1]
        assert self.max_area is not None
        return self.max_area


def _factor_pair(area: int, low: int, high: int) -> tuple[int, int] | None:
    """The factor pair ``(w, h)``, ``w <= h``, of ``area`` closest to square with sides in range."""
    for width in range(math.isqrt(area), 0, -1):
        if area % width == 0:
            height = area // width
            if height > high:
                return None  # smaller widths only make the height larger
            if width >= low:
                return (width, height)
            return None
    return None


# Read-only so no caller can change a preset for everyone else.
PRESETS: MappingProxyType[str, BucketSpec] = MappingProxyType(
    {
        # NovelAI's published scheme: 512x768 area, sides up to 1024, 64 px steps.
        "sd15": BucketSpec(resolution=(512, 768), min_side=256, max_side=1024, step=64),
        # The settings commonly used with sd-scripts for SDXL: 1024x1024 area, sides
        # 512..2048, 32 px steps (the smallest step SDXL's latent layout accepts).
        "sdxl": BucketSpec(resolution=(1024, 1024), min_side=512, max_side=2048, step=32),
    }
)


def preset(name: str) -> BucketSpec:
    """The named preset (``sd15`` or ``sdxl``); `dataclasses.replace` it to adjust."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise UsageError(f"unknown bucket preset {name!r} (known: {known})") from None


def make_buckets(spec: BucketSpec) -> list[Bucket]:
    """Every bucket of ``spec``, sorted by (width, height); the rule is in the module doc."""
    area, step = spec.area, spec.step
    side = math.isqrt(area) // step * step
    buckets: set[Bucket] = {(side, side)}
    for width in range(spec.min_side, spec.max_side + 1, step):
        height = min(spec.max_side, area // width // step * step)
        if height >= spec.min_side:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket for an image of ``width`` x ``height``: exact size, else nearest aspect.

    "Nearest" is the smallest ``abs(bw / bh - width / height)``; on a tie the bucket
    listed first wins (kohya uses ``numpy.argmin`` over the sorted list).
    """
    if width <= 0 or height <= 0:
        raise BucketError(f"image size must be positive, got {width}x{height}")
    if not buckets:
        raise BucketError("no buckets to choose from")
    if (width, height) in buckets:
        return (width, height)
    aspect = width / height
    return min(buckets, key=lambda b: abs(b[0] / b[1] - aspect))


def _round_to_step(value: float, step: int) -> int:
    # kohya's round_to_steps: round to the nearest pixel, then down to the step.
    rounded = int(value + 0.5)
    return rounded - rounded % step


def _aspect_error(width: int, height: int, aspect: float) -> float:
    return abs(width / height - aspect) if width > 0 and height > 0 else math.inf


def no_upscale_bucket(width: int, height: int, spec: BucketSpec) -> Bucket:
    """kohya's ``--bucket_no_upscale`` bucket: never larger than the image itself.

    An image above ``spec.area`` is first shrunk (keeping its aspect) to that area,
    rounding either the width or the height to the step, whichever keeps the aspect
    closer. The bucket is that size (or the image's own size when it is small enough)
    rounded down to the step on both sides.
    """
    if width <= 0 or height <= 0:
        raise BucketError(f"image size must be positive, got {width}x{height}")
    step, area = spec.step, spec.area
    aspect = width / height
    resized_w, resized_h = width, height
    if width * height > area:
        target_w = math.sqrt(area * aspect)
        target_h = area / target_w
        by_w = _round_to_step(target_w, step)
        by_w_h = _round_to_step(by_w / aspect, step)
        by_h = _round_to_step(target_h, step)
        by_h_w = _round_to_step(by_h * aspect, step)
        if _aspect_error(by_w, by_w_h, aspect) < _aspect_error(by_h_w, by_h, aspect):
            resized_w, resized_h = by_w, int(by_w / aspect + 0.5)
        else:
            resized_w, resized_h = int(by_h * aspect + 0.5), by_h
    bucket = (resized_w - resized_w % step, resized_h - resized_h % step)
    if bucket[0] < step or bucket[1] < step:
        raise BucketError(
            f"image {width}x{height} is too small or too narrow for {step} px bucket steps"
        )
    return _within_area(bucket, aspect, spec)


def _within_area(bucket: Bucket, aspect: float, spec: BucketSpec) -> Bucket:
    """Shrink a rounded no-upscale bucket until its area is at most ``spec.area``.

    sd-scripts rounds each side to the nearest step, so a bucket can come out a little
    larger than the area (576x1824 for 1024x1024). Given such a file, the trainer would
    shrink and crop it again; a bucket within the area is its own bucket there. A side
    is taken down by one step at a time, whichever keeps the aspect closer.
    """
    width, height = bucket
    step = spec.step
    while width * height > spec.area:
        narrower = _aspect_error(width - step, height, aspect)
        shorter = _aspect_error(width, height - step, aspect)
        if narrower <= shorter and width > step:
            width -= step
        elif height > step:
            height -= step
        else:
            width -= step
        if width < step or height < step:
            raise BucketError(f"no {step} px bucket fits the area {spec.area}")
    return (width, height)


def select_bucket(
    width: int, height: int, spec: BucketSpec, buckets: Sequence[Bucket] | None = None
) -> Bucket:
    """The bucket ``spec`` gives an image: `no_upscale_bucket` or `assign_bucket`.

    ``buckets`` defaults to ``make_buckets(spec)``; pass it to avoid rebuilding the set
    for every image.
    """
    if spec.no_upscale:
        return no_upscale_bucket(width, height, spec)
    return assign_bucket(width, height, make_buckets(spec) if buckets is None else buckets)


def bucket_histogram(assignments: Iterable[Bucket]) -> list[tuple[Bucket, int]]:
    """Count images per bucket, ordered from the tallest aspect to the widest."""
    counts = Counter((int(w), int(h)) for w, h in assignments)
    return sorted(counts.items(), key=lambda item: (item[0][0] / item[0][1], item[0]))


def render_histogram(histogram: Sequence[tuple[Bucket, int]], width: int = 40) -> str:
    """A text histogram, one line per bucket: size, aspect, bar and count.

    The longest bar is ``width`` characters; every non-empty bucket shows at least one.
    """
    if not histogram:
        return "(no images)"
    top = max(count for _, count in histogram)
    labels = [f"{w}x{h}" for (w, h), _ in histogram]
    label_width = max(len(label) for label in labels)
    count_width = len(str(top))
    lines = []
    for label, ((w, h), count) in zip(labels, histogram, strict=True):
        bar = "#" * max(1 if count else 0, round(count * width / top)) if top else ""
        lines.append(f"{label:>{label_width}} {w / h:5.2f} {count:>{count_width}} {bar}".rstrip())
    return "\n".join(lines)
