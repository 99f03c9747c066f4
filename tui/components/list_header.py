"""Column titles above the image list."""

from __future__ import annotations

from textual.widgets import Static

from tui.components.image_list import header_line


class ListHeader(Static):
    """Titles that follow the list's width and chosen score."""

    def __init__(self, score_name: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.score_name = score_name

    def on_resize(self) -> None:
        self.update("  " + header_line(max(self.size.width - 1, 10), self.score_name))
