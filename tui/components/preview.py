"""The selected image, drawn in the terminal.

textual-image picks Sixel or the kitty graphics protocol when the terminal answers
for them, and half-block cells otherwise (also when the output is not a terminal,
where it would fall back to plain characters). Decoding happens in a thread with a
small cache of thumbnails, so holding the down key never waits on a file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Container
from textual.worker import get_current_worker
from textual_image.renderable import Image as AutoRenderable
from textual_image.renderable.halfcell import Image as HalfcellRenderable
from textual_image.renderable.unicode import Image as UnicodeRenderable
from textual_image.widget import HalfcellImage
from textual_image.widget import Image as AutoImage

from curator.catalog.browse import preview
from tui.components.text_line import TextLine

# The auto choice falls back to plain characters off a terminal: half blocks look better.
ImageWidget = (
    HalfcellImage if AutoRenderable in (HalfcellRenderable, UnicodeRenderable) else AutoImage
)
CACHE_SIZE = 32
THUMBNAIL_SIDE = 768


class Preview(Container):
    """Shows the image at `path`; `show(None)` clears it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cache: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._path: str | None = None

    def compose(self) -> ComposeResult:
        yield ImageWidget(None, id="preview-image")
        yield TextLine(id="preview-caption")

    def show(self, path: str | None, label: str = "", upcoming: Sequence[str] = ()) -> None:
        """Show `path`, then decode the `upcoming` images into the cache meanwhile, so
        the next step shows at once."""
        self._path = path
        self.query_one("#preview-caption", TextLine).text = label
        if path is None:
            widget = self.query_one("#preview-image", ImageWidget)
            if widget.image is not None:
                widget.image = None
            return
        key = _key(path)
        cached = key is not None and key in self._cache
        if cached:
            self._cache.move_to_end(key)
            self.query_one("#preview-image", ImageWidget).image = self._cache[key]
        todo = ([] if cached else [path]) + [p for p in upcoming if p and p != path]
        self._decode(todo, set(self._cache))

    @work(thread=True, exclusive=True, group="preview")
    def _decode(self, paths: list[str], known: set[tuple[str, int]]) -> None:
        for path in paths:
            key = _key(path)
            if key is not None and key in known:
                continue
            try:
                image = preview(path, THUMBNAIL_SIDE) if key is not None else None
                problem = None if key is not None else "file is missing"
            except Exception as error:  # any unreadable file: say so, keep going
                image, problem = None, f"cannot preview: {error}"
            if get_current_worker().is_cancelled:
                return
            self.app.call_from_thread(self._decoded, path, key, image, problem)

    def _decoded(
        self, path: str, key: tuple[str, int] | None, image: Any, problem: str | None
    ) -> None:
        if image is not None and key is not None:
            self._cache[key] = image
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        if path != self._path:
            return  # the cursor has moved on
        widget = self.query_one("#preview-image", ImageWidget)
        if widget.image is not image:  # each new image lays the screen out again
            widget.image = image
        if problem:
            self.query_one("#preview-caption", TextLine).text = problem


def _key(path: str) -> tuple[str, int] | None:
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError:
        return None
