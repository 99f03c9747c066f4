"""X/Y/Z plots as A1111's script makes them: axes, cells, a labelled grid.

Axis names are A1111's labels. The seed is fixed once for every cell unless an axis is
Seed (where -1 or an empty value draws a random seed per value); Prompt S/R searches its
first value in the prompt and negative prompt and replaces it by each value in turn.
Cells run with the slowest-to-change axis outermost (checkpoint, then VAE), as A1111 does.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from curator.errors import CuratorError
from curator.generation.extra_networks import resolve_loras, split_extra_networks
from curator.generation.generate import GeneratedImage, GenerationParams, resolve_seed
from curator.generation.samplers import SCHEDULES, resolve_sampler
from curator.generation.xyz_values import expand
from curator.ingest.infotext import format_infotext, parse_infotext


class XYZError(CuratorError):
    """An X/Y/Z plot that cannot run."""


@dataclass(frozen=True)
class Axis:
    label: str
    kind: type
    field: str | None  # GenerationParams field, or None for special axes
    cost: float = 0.0  # A1111 puts costly axes outermost
    with_label: bool = True  # legend "Steps: 20" rather than "20"


AXES: dict[str, Axis] = {
    a.label.lower(): a
    for a in (
        Axis("Nothing", str, None),
        Axis("Seed", int, "seed"),
        Axis("Steps", int, "steps"),
        Axis("CFG Scale", float, "cfg_scale"),
        Axis("Prompt S/R", str, None, with_label=False),
        Axis("Sampler", str, "sampler", with_label=False),
        Axis("Schedule type", str, "schedule"),
        Axis("Checkpoint name", str, None, cost=1.0, with_label=False),
        Axis("VAE", str, None, cost=0.7),
        Axis("Clip skip", int, "clip_skip"),
        Axis("Denoising", float, "denoising_strength"),
        # Extra networks: a name axis adds <lora:NAME:STRENGTH> to the prompt ("None":
        # none) and a strength axis sets that tag's multiplier (or, with no name axis,
        # every such tag the prompt already has). Embeddings are used by name, weighted
        # (NAME:STRENGTH). Hypernetworks follow A1111's own axes (closest name; None
        # removes every hypernetwork tag).
        Axis("LoRA", str, None, with_label=False),
        Axis("LoRA strength", float, None),
        Axis("Embedding", str, None, with_label=False),
        Axis("Embedding strength", float, None),
        Axis("Hypernetwork", str, None, with_label=False),
        Axis("Hypernet str.", float, None),
    )
}
# name axis → (strength axis, prompt tag; None for embeddings)
NETWORK_AXES = {
    "LoRA": ("LoRA strength", "lora"),
    "Embedding": ("Embedding strength", None),
}
ALIASES = {
    "checkpoint": "checkpoint name",
    "cfg": "cfg scale",
    "prompt sr": "prompt s/r",
    "lora weight": "lora strength",
    "embedding weight": "embedding strength",
    "hypernet": "hypernetwork",
    "hypernet strength": "hypernet str.",
    "hypernetwork strength": "hypernet str.",
    "hypernetwork weight": "hypernet str.",
}


@dataclass
class AxisValues:
    axis: Axis
    text: str
    values: list

    def labels(self) -> list[str]:
        out = []
        for value in self.values:
            shown = round(value, 8) if isinstance(value, float) else value
            if self.axis.label == "Nothing":
                out.append("")
            elif self.axis.label == "Checkpoint name":
                out.append(os.path.basename(str(value)))
            elif self.axis.with_label:
                out.append(f"{self.axis.label}: {shown}")
            else:
                out.append(str(shown))
        return out


@dataclass
class Cell:
    ix: int
    iy: int
    iz: int
    params: GenerationParams
    checkpoint: str | None
    vae: str | None


def parse_axis(spec: str | None) -> AxisValues:
    """`LABEL=VALUES` (e.g. `Steps=10-30 (+10)`); None is the Nothing axis."""
    if spec is None:
        return AxisValues(AXES["nothing"], "", [0])
    label, sep, text = spec.partition("=")
    key = ALIASES.get(label.strip().lower(), label.strip().lower())
    if not sep or key not in AXES:
        known = ", ".join(a.label for a in AXES.values())
        raise XYZError(f"axis {spec!r} is not LABEL=VALUES with a known label ({known})")
    axis = AXES[key]
    values = expand(axis.kind, text)
    if not values:
        raise XYZError(f"axis {axis.label} has no values")
    return AxisValues(axis, text, values)


def _check(axis: AxisValues, base: GenerationParams) -> None:
    label = axis.axis.label
    if label == "Sampler":
        for value in axis.values:
            resolve_sampler(value)
    elif label == "Schedule type":
        known = {k.lower() for k in SCHEDULES}
        for value in axis.values:
            if value.lower() not in known:
                raise XYZError(f"unknown schedule type {value!r}")
    elif label == "Hypernetwork":  # A1111: the closest name; None for no hypernetwork
        axis.values = [_hypernet_name(value, base) for value in axis.values]
    elif label == "Prompt S/R":
        first = axis.values[0]
        if first not in base.prompt and first not in base.negative_prompt:
            raise XYZError(f"Prompt S/R did not find {first} in prompt or negative prompt")
    elif label in NETWORK_AXES:
        _check_network_names(label, [v for v in axis.values if not _is_none(v)], base)


def _apply(axis: AxisValues, value, params: GenerationParams, cell: dict) -> GenerationParams:
    label = axis.axis.label
    if label == "Prompt S/R":
        first = axis.values[0]
        return replace(
            params,
            prompt=params.prompt.replace(first, value),
            negative_prompt=params.negative_prompt.replace(first, value),
        )
    if label == "Checkpoint name":
        cell["checkpoint"] = value
        return params
    if label == "VAE":
        cell["vae"] = None if value.lower() in ("none", "automatic", "auto") else value
        return params
    if label in ("Hypernetwork", "Hypernet str."):
        cell[label] = value
        return params
    if label in NETWORK_AXES or label in {s for s, _ in NETWORK_AXES.values()}:
        cell.setdefault("networks", {})[label] = value
        return params
    if axis.axis.field:
        return replace(params, **{axis.axis.field: value})
    return params


def _hypernet_name(value: str, base: GenerationParams) -> str:
    from curator.generation.hypernetworks import closest_name

    if value.strip().lower() in ("", "none"):
        return "None"
    found = closest_name(value, base.hypernetwork_dirs)
    if found is None:
        raise XYZError(f"unknown hypernetwork {value!r} (none in --hypernetwork-dir matches)")
    return found


def _with_hypernet(params: GenerationParams, cell: dict) -> GenerationParams:
    """The Hypernetwork and Hypernet str. axes set the prompt's `<hypernet:...>` tag."""
    from curator.generation.hypernetworks import HypernetworkError, prompt_with_hypernet

    if "Hypernetwork" not in cell and "Hypernet str." not in cell:
        return params
    try:
        prompt = prompt_with_hypernet(
            params.prompt, cell.get("Hypernetwork"), cell.get("Hypernet str.")
        )
    except HypernetworkError as error:
        raise XYZError(f"Hypernet str. axis: {error}") from None
    return replace(params, prompt=prompt)


def _is_none(value: str) -> bool:
    return value.strip().lower() in ("", "none")


def _check_network_names(label: str, names: list[str], base: GenerationParams) -> None:
    """LoRAs and embeddings an axis names must exist before anything runs; hypernetworks
    are found when their prompt tags are resolved."""
    if label == "LoRA":
        resolve_loras([("lora", [name]) for name in names], base.lora_dirs, base.allow_pickle)
    elif label == "Embedding":
        folders = [Path(d).expanduser() for d in base.embeddings_dirs]
        for name in names:
            if not any(p.stem == name for d in folders if d.is_dir() for p in d.rglob("*")):
                where = ", ".join(base.embeddings_dirs) or "(no --embeddings-dir)"
                raise XYZError(f"Embedding axis: {name!r} not found in {where}")


def _apply_networks(params: GenerationParams, chosen: dict) -> GenerationParams:
    """A cell's network and strength values, applied to its prompt together."""
    prompt = params.prompt
    for name_label, (strength_label, tag) in NETWORK_AXES.items():
        strength = chosen.get(strength_label)
        if name_label in chosen:
            name = chosen[name_label]
            if _is_none(name):
                continue
            weight = _number(1.0 if strength is None else strength)
            if tag is None:
                prompt = f"{prompt}, ({name}:{weight})" if prompt else f"({name}:{weight})"
            else:
                prompt = _set_tag(prompt, tag, name, weight)
        elif strength is not None:
            if tag is None:
                raise XYZError("an Embedding strength axis needs an Embedding axis")
            names = [args[0] for kind, args in split_extra_networks(prompt)[1] if kind == tag]
            if not names:
                raise XYZError(
                    f"{strength_label} axis: the prompt has no <{tag}:...> and there is no "
                    f"{name_label} axis"
                )
            for name in names:
                prompt = _set_tag(prompt, tag, name, _number(strength))
    return replace(params, prompt=prompt)


def _set_tag(prompt: str, tag: str, name: str, weight: str) -> str:
    """`<tag:name:weight>` in place of the prompt's tags for `name`, or appended."""
    pattern = re.compile(rf"<{re.escape(tag)}:{re.escape(name)}(:[^>]*)?>")
    if pattern.search(prompt):
        return pattern.sub(f"<{tag}:{name}:{weight}>", prompt)
    return f"{prompt} <{tag}:{name}:{weight}>" if prompt else f"<{tag}:{name}:{weight}>"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def plan_cells(
    base: GenerationParams,
    x: AxisValues,
    y: AxisValues,
    z: AxisValues,
    checkpoint: str | None = None,
    rng: random.Random | None = None,
) -> list[Cell]:
    """Every cell's parameters, in the order A1111 runs them."""
    for axis in (x, y, z):
        _check(axis, base)
    rng = rng or random.Random(secrets.randbits(64))
    base = replace(base, seed=resolve_seed(base.seed), batch_count=1)
    for axis in (x, y, z):
        if axis.axis.label == "Seed":
            axis.values = [rng.randrange(4294967294) if v in (-1, "") else v for v in axis.values]
    cells = {}
    for iz, zv in enumerate(z.values):
        for iy, yv in enumerate(y.values):
            for ix, xv in enumerate(x.values):
                extra: dict[str, Any] = {"checkpoint": checkpoint, "vae": None}
                params = base
                for axis, value in ((x, xv), (y, yv), (z, zv)):
                    params = _apply(axis, value, params, extra)
                params = _with_hypernet(params, extra)
                if "networks" in extra:
                    params = _apply_networks(params, extra["networks"])
                cells[(ix, iy, iz)] = Cell(ix, iy, iz, params, extra["checkpoint"], extra["vae"])
    return [cells[k] for k in _run_order(x, y, z)]


def _run_order(x: AxisValues, y: AxisValues, z: AxisValues) -> list[tuple[int, int, int]]:
    """A1111's loop nesting: the costliest axis outermost (z, then y by default)."""
    sizes = {"x": len(x.values), "y": len(y.values), "z": len(z.values)}
    first, second = "z", "y"
    if x.axis.cost > y.axis.cost and x.axis.cost > z.axis.cost:
        first, second = "x", ("y" if y.axis.cost > z.axis.cost else "z")
    elif y.axis.cost > x.axis.cost and y.axis.cost > z.axis.cost:
        first, second = "y", ("x" if x.axis.cost > z.axis.cost else "z")
    elif z.axis.cost > x.axis.cost and z.axis.cost > y.axis.cost:
        first, second = "z", ("x" if x.axis.cost > y.axis.cost else "y")
    third = ({"x", "y", "z"} - {first, second}).pop()
    order = []
    for a in range(sizes[first]):
        for b in range(sizes[second]):
            for c in range(sizes[third]):
                index = {first: a, second: b, third: c}
                order.append((index["x"], index["y"], index["z"]))
    return order


def dry_run(cells: list[Cell], x: AxisValues, y: AxisValues, z: AxisValues) -> dict:
    return {
        "axes": {
            name: {"type": a.axis.label, "values": a.values, "labels": a.labels()}
            for name, a in (("x", x), ("y", y), ("z", z))
        },
        "cells": [
            {
                "x": c.ix,
                "y": c.iy,
                "z": c.iz,
                "checkpoint": c.checkpoint,
                "vae": c.vae,
                **asdict(c.params),
            }
            for c in cells
        ],
    }


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _wrapped(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> list[str]:
    """Greedy word wrap to `width` pixels (long words keep their own line)."""
    if not text:
        return [""]
    average = max(1, int(draw.textlength("x", font=font)))
    lines = textwrap.wrap(text, width=max(1, width // average)) or [text]
    return lines


def draw_grid(
    images: dict[tuple[int, int, int], Image.Image],
    x: AxisValues,
    y: AxisValues,
    z: AxisValues,
) -> Image.Image:
    """One sub-grid per Z value side by side; X labels on top, Y labels on the left."""
    sample = next(iter(images.values()))
    cw, ch = sample.size
    font = _font(max(10, cw // 16))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(font.size * 1.25) if hasattr(font, "size") else 12
    x_labels, y_labels, z_labels = x.labels(), y.labels(), z.labels()
    top_lines = max(len(_wrapped(probe, t, cw, font)) for t in x_labels)
    top = (top_lines * line_h + 8) if any(x_labels) else 0
    left_w = max(cw // 2, 64) if any(y_labels) else 0
    title = (line_h + 8) if any(z_labels) else 0
    sub_w = left_w + cw * len(x.values)
    sub_h = title + top + ch * len(y.values)
    grid = Image.new("RGB", (sub_w * len(z.values), sub_h), "white")
    draw = ImageDraw.Draw(grid)
    for iz in range(len(z.values)):
        ox = iz * sub_w
        if title:
            draw.text((ox + sub_w // 2, 4), z_labels[iz], fill="black", font=font, anchor="ma")
        for ix, label in enumerate(x_labels):
            for n, line in enumerate(_wrapped(draw, label, cw, font)):
                at = (ox + left_w + ix * cw + cw // 2, title + 4 + n * line_h)
                draw.text(at, line, fill="black", font=font, anchor="ma")
        for iy, label in enumerate(y_labels):
            lines = _wrapped(draw, label, left_w - 4, font)
            y0 = title + top + iy * ch + (ch - len(lines) * line_h) // 2
            for n, line in enumerate(lines):
                draw.text(
                    (ox + left_w // 2, y0 + n * line_h), line, fill="black", font=font, anchor="ma"
                )
        for iy in range(len(y.values)):
            for ix in range(len(x.values)):
                cell = images.get((ix, iy, iz))
                if cell is not None:
                    grid.paste(cell.convert("RGB"), (ox + left_w + ix * cw, title + top + iy * ch))
    return grid


def grid_infotext(first_cell_infotext: str, x: AxisValues, y: AxisValues, z: AxisValues) -> str:
    """The first cell's infotext plus A1111's `Script`, `X Type`, `X Values`, ... keys."""
    info = parse_infotext(first_cell_infotext)
    info.params["Script"] = "X/Y/Z plot"
    for name, axis in (("X", x), ("Y", y), ("Z", z)):
        if axis.axis.label != "Nothing":
            info.params[f"{name} Type"] = axis.axis.label
            info.params[f"{name} Values"] = axis.text
            if axis.axis.label == "Seed":
                info.params[f"Fixed {name} Values"] = ", ".join(str(v) for v in axis.values)
    return format_infotext(info)


def run_xyz(
    cells: list[Cell],
    x: AxisValues,
    y: AxisValues,
    z: AxisValues,
    generate_cell: Callable[[Cell], list[GeneratedImage]],
    out_dir: str | Path,
) -> tuple[Path, list[GeneratedImage]]:
    """Generate every cell (each saved with its infotext), then the labelled grid."""
    made: dict[tuple[int, int, int], GeneratedImage] = {}
    for cell in cells:
        made[(cell.ix, cell.iy, cell.iz)] = generate_cell(cell)[0]
    grid = draw_grid({k: v.image for k, v in made.items()}, x, y, z)
    text = grid_infotext(made[(0, 0, 0)].infotext, x, y, z)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"xyz_grid-{made[(0, 0, 0)].seed}-{secrets.token_hex(3)}.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    tmp = path.with_name(f".{path.name}.tmp")
    grid.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)
    return path, [made[(c.ix, c.iy, c.iz)] for c in cells]
