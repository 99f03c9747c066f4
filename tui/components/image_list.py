"""The image list: a line-API widget that reads rows by position, a page at a time.

`ListView` and a filled `DataTable` build one object per row; this widget draws only
the lines on screen, asking the `Listing` for each, so a million images cost what
fifty do.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from curator.catalog.browse import ImageRow, Listing
from tui.bindings import LIST

# Words and a mark for each state: colour is never the only signal.
STATE_MARKS = {"accepted": "✓ accepted", "rejected": "✗ rejected", "pending": "· pending"}


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def columns(width: int, score_name: str) -> list[tuple[str, int, str]]:
    """(title, width, align) of each column; the file name takes what is left."""
    fixed = [
        ("size", 9, ">"),
        ("state", 11, "<"),
        ("tags", 5, ">"),
        (score_name[:8], 8, ">"),
    ]
    name = max(width - 2 - sum(w + 1 for _, w, _ in fixed), 8)
    return [("file", name, "<"), *fixed]


def format_row(row: ImageRow, width: int, score_name: str) -> str:
    cells = [
        row.name,
        human_size(row.bytes),
        STATE_MARKS.get(row.status, row.status),
        str(row.tags),
        "-" if row.score is None else f"{row.score:.3g}",
    ]
    return _line(cells, columns(width, score_name))


def header_line(width: int, score_name: str) -> str:
    cols = columns(width, score_name)
    return _line([title for title, _, _ in cols], cols)


def _line(cells: list[str], cols: list[tuple[str, int, str]]) -> str:
    parts = []
    for text, (_, w, align) in zip(cells, cols, strict=True):
        text = text if len(text) <= w else text[: w - 1] + "…"
        parts.append(f"{text:{align}{w}}")
    return " ".join(parts)


def row_score_name(listing: Listing | None) -> str:
    return listing.score if listing is not None else ""


class ImageList(ScrollView, can_focus=True):
    """Rows of a `Listing`; the cursor row is marked with ▶ and shown in reverse."""

    BINDINGS = LIST
    COMPONENT_CLASSES = {"image-list--cursor", "image-list--accepted", "image-list--rejected"}

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class Highlighted(Message):
        """The cursor moved to another image (or the list changed under it)."""

        def __init__(self, position: int, row: ImageRow | None, count: int) -> None:
            super().__init__()
            self.position = position
            self.row = row
            self.count = count

    def __init__(self, listing: Listing | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.listing = listing
        self._styles: dict[str, Style] = {}  # component styles, read once per style change

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            if name == "base":
                style = self.rich_style
            else:
                style = self.rich_style + self.get_component_rich_style(name)
            self._styles[name] = style
        return style

    # -- data ----------------------------------------------------------------------

    def set_listing(self, listing: Listing, position: int = 0) -> None:
        """Show another listing (a new filter, or the same one refreshed)."""
        self.listing = listing
        self._resize()
        self.cursor = self._clamp(position)

    def _resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.count)

    @property
    def count(self) -> int:
        """Images in the list (0 until a listing is set; its count is read off-screen)."""
        return 0 if self.listing is None else self.listing.count()

    @property
    def current(self) -> ImageRow | None:
        return None if self.listing is None else self.listing.row(self.cursor)

    def _clamp(self, position: int) -> int:
        return max(0, min(position, self.count - 1)) if self.count else 0

    def on_resize(self) -> None:
        self._resize()

    def on_mount(self) -> None:
        self._resize()

    # -- cursor --------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        if self._scroll_to_cursor() or old == new:
            self.refresh()
        else:  # only the two rows whose marks changed
            self.refresh_line(old)
            self.refresh_line(new)
        self.post_message(self.Highlighted(new, self.current, self.count))

    def _scroll_to_cursor(self) -> bool:
        """Scroll so the cursor row shows; whether it scrolled."""
        height = max(self.scrollable_content_region.height, 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)
        else:
            return False
        return True

    def move_to(self, position: int) -> None:
        self.cursor = self._clamp(position)

    def action_cursor_down(self) -> None:
        self.move_to(self.cursor + 1)

    def action_cursor_up(self) -> None:
        self.move_to(self.cursor - 1)

    def action_page_down(self) -> None:
        self.move_to(self.cursor + max(self.scrollable_content_region.height - 1, 1))

    def action_page_up(self) -> None:
        self.move_to(self.cursor - max(self.scrollable_content_region.height - 1, 1))

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(self.count - 1)

    def on_click(self, event) -> None:  # noqa: ANN001
        self.move_to(self.scroll_offset.y + event.y)

    def on_focus(self) -> None:
        self._styles.clear()  # the cursor style depends on focus
        self.refresh()

    def on_blur(self) -> None:
        self._styles.clear()
        self.refresh()

    # -- drawing -------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        position = self.scroll_offset.y + y
        width = self.size.width - self.scrollbar_size_vertical
        row = self.listing.row(position) if self.listing and position < self.count else None
        if row is None:
            return Strip.blank(width, self._style("base"))
        selected = position == self.cursor
        text = ("▶ " if selected else "  ") + format_row(row, width, row_score_name(self.listing))
        if selected:
            style = self._style("image-list--cursor")
        elif row.status in ("accepted", "rejected"):
            style = self._style(f"image-list--{row.status}")
        else:
            style = self._style("base")
        return Strip([Segment(text.ljust(width)[:width], style)], width)
