"""Descriptions as text paragraphs, JSON-ready dicts, or HTML `<img>` elements."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from curator.describe.catalog import Described

FORMATS = ("text", "json", "html")


def plain_wanted(plain: bool, is_tty: bool) -> bool:
    """No colour or decoration with --plain, NO_COLOR set, or output not a terminal."""
    return plain or bool(os.environ.get("NO_COLOR")) or not is_tty


def as_text(items: Sequence[Described], *, plain: bool) -> str:
    """One paragraph per image; the file name leads when there are several."""
    import click

    paragraphs = []
    for item in items:
        name = Path(item.path).name if item.path else f"image {item.image_id}"
        if len(items) == 1:
            paragraphs.append(item.text)
        elif plain:
            paragraphs.append(f"{name}: {item.text}")
        else:
            paragraphs.append(f"{click.style(name, bold=True)}\n{item.text}")
    return "\n\n".join(paragraphs)


def as_html(items: Sequence[Described]) -> str:
    lines = []
    for item in items:
        src = html.escape(item.written or item.path or "", quote=True)
        alt = html.escape(item.text, quote=True)
        lines.append(f'<img src="{src}" alt="{alt}">')
    return "\n".join(lines)
