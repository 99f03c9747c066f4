"""The detail panel: tags by category with score and origin, captions, generation
parameters, detections and the duplicate group of the selected image.

A line-API widget: the text is cut into lines once per image and drawn a line at a
time. A `Static` in a scrolling container asks for a layout of the whole screen on
every update; this panel asks only when an image's text outgrows the panel (and
its scroll height changes), so showing the next image repaints the panel alone.
"""

from __future__ import annotations

import os
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.components.image_list import STATE_MARKS, human_size

CATEGORY_ORDER = ("rating", "character", "copyright", "artist", "general", "meta")
GENERATION_FIELDS = (
    ("prompt", "prompt"),
    ("negative_prompt", "negative"),
    ("steps", "steps"),
    ("sampler", "sampler"),
    ("cfg_scale", "cfg"),
    ("seed", "seed"),
    ("model", "model"),
    ("model_hash", "model hash"),
)


def shown_path(path: str | None) -> str:
    """A path as a person would type it here: relative below the working folder."""
    if not path:
        return "(no file)"
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def detail_text(report: dict[str, Any] | None) -> Text:
    """The panel's text; headings are bold and followed by a colon, so they read aloud."""
    out = Text()
    if report is None:
        out.append("No image selected.")
        return out

    def heading(title: str) -> None:
        out.append(f"\n{title}:\n", style="bold")

    out.append(f"{shown_path(report['path'])}\n", style="bold")
    out.append(
        f"{report['width']}×{report['height']} {report['format']} {report['mode']}, "
        f"{human_size(report['bytes'])}, "
        f"state: {STATE_MARKS.get(report['status'], report['status'])}\n"
    )
    missing = [shown_path(f["path"]) for f in report["files"] if not f["present"]]
    if missing:
        out.append(f"missing files: {', '.join(missing)}\n")

    groups: dict[str, list[dict[str, Any]]] = report["tag_groups"]
    total = sum(len(v) for v in groups.values())
    heading(f"Tags ({total})")
    if not groups:
        out.append("  none\n")
    order = [c for c in CATEGORY_ORDER if c in groups] + sorted(set(groups) - set(CATEGORY_ORDER))
    for category in order:
        out.append(f" {category}:\n", style="italic")
        for tag in groups[category]:
            by = ", ".join(tag["given_by"])
            out.append(f"  {tag['name']}  {tag['score']:.2f}  ({by})\n")

    heading(f"Captions ({len(report['captions'])})")
    if not report["captions"]:
        out.append("  none\n")
    for c in report["captions"]:
        out.append(f"  {c['kind']} from {c['source']}: ", style="italic")
        out.append(f"{c['text']}\n")

    gen = report["generation"]
    heading("Generation parameters")
    if gen is None:
        out.append("  none\n")
    else:
        for key, label in GENERATION_FIELDS:
            if gen.get(key) not in (None, ""):
                out.append(f"  {label}: {gen[key]}\n")

    if report["scores"]:
        heading("Scores")
        for name, value in sorted(report["scores"].items()):
            out.append(f"  {name}: {value:.3g}\n")

    heading(f"Detections ({len(report['detections'])})")
    if not report["detections"]:
        out.append("  none\n")
    for d in report["detections"]:
        x, y, w, h = d["box"]
        what = f"“{d['text']}”" if d["text"] else d["label"]
        out.append(f"  {d['detector']}: {what} {d['score']:.2f} at {x},{y} {w}×{h}\n")

    heading("Duplicate group")
    dups = report["duplicates"]
    if not dups:
        out.append("  none\n")
    else:
        for m in dups:
            role = "keeper" if m["keeper"] else "duplicate"
            this = " (this image)" if m["id"] == report["id"] else ""
            out.append(f"  {role}: {m['name']} {m['size']} {m['status']}{this}\n")
    return out


class DetailPanel(ScrollView, can_focus=False):
    """Scrollable text about the selected image."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = detail_text(None)
        self._lines: list[Strip] = []
        self._cut_at = -1  # the width the lines were cut for

    def show(self, report: dict[str, Any] | None) -> None:
        self.text = detail_text(report)
        self._cut_at = -1
        self.scroll_to(y=0, animate=False, immediate=True)
        self._cut()
        self.refresh()

    @property
    def plain(self) -> str:
        """The panel's text without styles, as a screen reader gets it."""
        return self.text.plain

    def on_resize(self) -> None:
        self._cut()

    def _cut(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or width == self._cut_at:
            return
        console = self.app.console
        lines = console.render_lines(
            self.text, console.options.update(width=width, height=None), pad=False
        )
        self._lines = [Strip(line).simplify() for line in lines]
        self._cut_at = width
        # Text shorter than the panel keeps the scroll height the panel's: no layout.
        height = max(len(self._lines), self.scrollable_content_region.height)
        size = Size(width, height)
        if self.virtual_size != size:
            self.virtual_size = size

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = self.scroll_offset.y + y
        style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        line = self._lines[index]
        return (
            Strip(Segment.apply_style(line, style), line.cell_length)
            .extend_cell_length(width, style)
            .crop(0, width)
            .simplify()  # one segment per style, as a `Static` draws it
        )
