"""The image list: a line-API widget that reads rows by position, a page at a time.

`ListView` and a filled `DataTable` build one object per row; this widget draws only
the lines on screen, asking the `Listing` for each, so a million images cost what
fifty do. Drawing never waits on the catalog: a row whose page is not in memory is
drawn as a placeholder while a worker thread reads it, and the pages a screen either
way of the cursor, and the first and last, are read ahead, so stepping, paging and
jumping to either end find their rows in memory.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import get_current_worker

from curator.catalog.browse import PAGE, ImageRow, Listing
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

    # No repaint of the whole list: the watcher repaints the two rows that change.
    cursor: reactive[int] = reactive(0, always_update=True, init=False, repaint=False)

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
        self._wanted: set[int] = set()  # pages asked of a worker and not yet read

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
        self._wanted = set()
        self._resize()
        self.cursor = self._clamp(position)
        self._read_ahead()

    def _resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.count)

    @property
    def count(self) -> int:
        """Images in the list (0 until a listing is set; its count is read off-screen)."""
        return 0 if self.listing is None else self.listing.count()

    @property
    def current(self) -> ImageRow | None:
        """The row under the cursor (read at once if its page is not in memory)."""
        return None if self.listing is None else self.listing.row(self.cursor)

    @property
    def current_shown(self) -> ImageRow | None:
        """The row under the cursor if its page is in memory (never waits)."""
        return None if self.listing is None else self.listing.peek(self.cursor)

    def _clamp(self, position: int) -> int:
        return max(0, min(position, self.count - 1)) if self.count else 0

    def on_resize(self) -> None:
        self._resize()
        self._read_ahead()

    def on_mount(self) -> None:
        self._resize()

    # -- cursor --------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        if self._scroll_to_cursor() or old == new:
            self.refresh()
        else:  # only the two rows whose marks changed
            self.refresh_line(old)
            self.refresh_line(new)
        self._read_ahead()
        row = self.current_shown
        if row is not None or not self.count:
            self.post_message(self.Highlighted(new, row, self.count))
        # else: posted when its page has been read

    # -- reading ahead -------------------------------------------------------------

    @property
    def reading(self) -> bool:
        """Pages are being read."""
        return bool(self._wanted)

    def _read_ahead(self) -> None:
        """Have a worker read the pages of the screen, a screen either way of it, and
        the first and last screens, those not in memory or asked for already."""
        listing = self.listing
        if listing is None or not self.count:
            return
        height = max(self.scrollable_content_region.height, 1)
        top = self.scroll_offset.y
        near = listing.pages_of(top - height, top + 2 * height)
        # The ends as far as `near` reaches from them: `g` and `G` then start no read
        # (a read on another thread slows the UI thread's paint); the listing keeps them.
        first = listing.pages_of(0, 3 * height)
        last = listing.pages_of(self.count - 3 * height, self.count)
        ends = [p for p in dict.fromkeys([*first, *reversed(last)]) if p not in near]
        todo = [p for p in listing.missing([*near, *ends]) if p not in self._wanted]
        if todo:
            self._wanted.update(todo)
            self._read(listing, todo)

    @work(thread=True, group="list-pages")
    def _read(self, listing: Listing, pages: list[int]) -> None:
        for page in pages:  # one at a time: the rows on screen show as soon as read
            try:
                listing.load_pages([page])
                problem = None
            except Exception as error:  # shown, never raised into the UI
                problem = f"cannot read the list: {error}"
            if get_current_worker().is_cancelled:
                return  # the app is closing
            try:
                self.app.call_from_thread(self._page_read, listing, page, problem)
            except RuntimeError:
                return  # the app has stopped meanwhile

    def _page_read(self, listing: Listing, page: int, problem: str | None = None) -> None:
        if listing is not self.listing:
            return  # another listing is shown now
        if problem is not None:  # stays asked for: not read again until a refresh
            self.notify(problem, severity="error")
            return
        self._wanted.discard(page)
        top = self.scroll_offset.y
        height = max(self.scrollable_content_region.height, 1)
        if page * PAGE < top + height and (page + 1) * PAGE > top:
            self.refresh()  # placeholders on screen become rows
        if self.cursor // PAGE == page:
            row = self.current_shown
            if row is not None:
                self.post_message(self.Highlighted(self.cursor, row, self.count))

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
        listing = self.listing
        if listing is None or position >= self.count:
            return Strip.blank(width, self._style("base"))
        row = listing.peek(position)
        if row is None:  # its page is being read (or, scrolled to, is to be)
            if position // PAGE not in self._wanted:
                self.call_later(self._read_ahead)
            text = ("▶ " if position == self.cursor else "  ") + "…"
            return Strip([Segment(text.ljust(width)[:width], self._style("base"))], width)
        selected = position == self.cursor
        text = ("▶ " if selected else "  ") + format_row(row, width, row_score_name(self.listing))
        if selected:
            style = self._style("image-list--cursor")
        elif row.status in ("accepted", "rejected"):
            style = self._style(f"image-list--{row.status}")
        else:
            style = self._style("base")
        return Strip([Segment(text.ljust(width)[:width], style)], width)
