"""`curator review`: a keyboard-first Textual app over the catalog.

The app holds the catalog and the current `Listing`; widgets report what the person
did through messages, and every change goes through a library call. Writes run one
at a time on a single background thread, in the order they were asked for, so the
screen never waits on the catalog's write lock (a CLI run may hold it).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING, Any, TypeVar

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import get_current_worker

from curator.catalog import browse
from curator.catalog.browse import DEFAULT_SCORE, Listing
from curator.curation import edits, review
from curator.curation.caption_edits import USER_CAPTION
from curator.errors import CuratorError, QueryError
from curator.progress import CancelToken
from tui import bulk
from tui.bindings import APP
from tui.components.caption_editor import CaptionEditor
from tui.components.choice import Choice
from tui.components.confirm import Confirm
from tui.components.detail import DetailPanel
from tui.components.filter_bar import FilterBar
from tui.components.frequency import FrequencyPanel
from tui.components.help import HelpScreen
from tui.components.image_list import STATE_MARKS, ImageList
from tui.components.key_bar import KeyBar
from tui.components.list_header import ListHeader
from tui.components.preview import Preview
from tui.components.status_line import StatusLine
from tui.components.tag_entry import TagEntry
from tui.components.task_bar import TaskBar
from tui.runs import RunsMixin

if TYPE_CHECKING:  # the catalog's type only: tui/ calls the library, not db/
    from db.engine import Catalog

CAPTION_NOTE = "Your caption is one undoable edit; model captions stay as they are."
W = TypeVar("W", bound=Widget)
SETTLE_S = 0.12  # the cursor rests this long before preview and detail load


class ReviewApp(RunsMixin, App[None]):
    """Review the images a query selects. Raises `QueryError` for a bad query."""

    CSS_PATH = "review.tcss"
    TITLE = "curator review"
    BINDINGS = APP

    def __init__(
        self,
        catalog: Catalog,
        query: str = "",
        *,
        score: str = DEFAULT_SCORE,
        base: str | None = None,
    ) -> None:
        super().__init__()
        # Runs start process pools; Python's resource tracker, started with the first
        # one, passes on stderr's file descriptor, which Textual replaces while it runs.
        # Started now, it gets the real one.
        resource_tracker.ensure_running()
        self.catalog = catalog
        self.score = score
        self.base = base
        self.listing = Listing(catalog, query, score=score, base=base)
        self.detail: dict[str, Any] | None = None
        self.cancel_token: CancelToken | None = None
        self.pending_writes = 0
        self._shown: tuple[int, int] | None = None  # (position, image id) last announced
        self._settle: Timer | None = None
        self._moved_at = 0.0
        self._selected: browse.ImageRow | None = None
        self._loading = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="catalog-write")
        # Count the images and read the first page while Textual starts: both take
        # about as long, so the first screen shows rows as soon as it is laid out.
        # (Errors are left for the load on mount to meet and report.)
        early = ThreadPoolExecutor(1, thread_name_prefix="catalog-read")
        early.submit(self.listing.count)
        early.shutdown(wait=False)

    # -- layout --------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield FilterBar(self.listing.query, id="filter")
        with Horizontal(id="main"):
            with Vertical(id="list-pane"):
                yield ListHeader(self.score, id="list-header")
                yield ImageList(id="images")
            with Vertical(id="side"):
                yield Preview(id="preview")
                yield DetailPanel(id="detail")
        yield TaskBar(id="task-bar")
        yield StatusLine(id="status")
        yield KeyBar(id="keys")

    def part(self, selector: str, kind: type[W]) -> W:
        """A widget of the main screen, also while a dialog is on top of it."""
        return self.screen_stack[0].query_one(selector, kind)

    @property
    def image_list(self) -> ImageList:
        return self.part("#images", ImageList)

    @property
    def status(self) -> StatusLine:
        return self.part("#status", StatusLine)

    def on_mount(self) -> None:
        self.part("#task-bar", TaskBar).display = False
        self.image_list.focus()
        self.status.say("counting images…")
        self.load(self.listing, 0, "start")
        self._freeze_heap()

    @staticmethod
    def _freeze_heap() -> None:
        """Leave what exists now (modules, widgets, the listing's rules) out of the
        collector's full passes: on a loaded heap one took 150 ms, a key press frozen
        mid-paint. Done at start only (garbage frozen with it waits for the thaw) and
        thawed when the app ends, so nothing stays uncollectable."""
        gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()
        if self.cancel_token is not None:
            self.cancel_token.cancel()  # a long run stops at its next batch, work kept
        self._writer.shutdown(wait=True)  # a write asked for is finished, never dropped

    def say(self, text: str, *, notify: bool = True, error: bool = False) -> None:
        """Every state change as a line of text: the status line, and a notification."""
        self.status.say(text)
        if notify:
            self.notify(text, severity="error" if error else "information")

    def _count_line(self) -> str:
        what = f"matching {self.listing.query!r}" if self.listing.query else "in the catalog"
        return f"{self.listing.count():,} images {what}"

    # -- selection -----------------------------------------------------------------

    def on_image_list_highlighted(self, event: ImageList.Highlighted) -> None:
        if not self.screen_stack:
            return  # the app is closing
        row = event.row
        moved = row is None or (event.position, row.id) != self._shown
        self._shown = None if row is None else (event.position, row.id)
        # The line, preview and detail follow once the cursor rests: a held key only
        # moves the list (each costs a repaint beyond the two rows that changed).
        if row is None:
            self.status.say_later("no images")
        elif moved:  # a refresh under the cursor keeps the last message in view
            self.status.say_later(
                f"image {event.position + 1:,} of {event.count:,}: {row.name}, "
                f"{STATE_MARKS.get(row.status, row.status)}, {row.tags} tags"
            )
        self._selected = row
        self._moved_at = time.monotonic()
        if self._settle is None:  # one timer, put off while keys keep coming
            self._settle = self.set_timer(SETTLE_S, self._settled)

    def _settled(self) -> None:
        wait = SETTLE_S - (time.monotonic() - self._moved_at)
        if wait > 0.005:
            self._settle = self.set_timer(wait, self._settled)
            return
        self._settle = None
        if not self.is_running or not self.screen_stack:
            return  # the app is closing
        self.status.flush()
        self._show_selected(self._selected)

    def _show_selected(self, row: browse.ImageRow | None) -> None:
        preview = self.part("#preview", Preview)
        if row is None:
            preview.show(None, "no images")
            self.detail = None
            self.part("#detail", DetailPanel).show(None)
            return
        position = self.image_list.cursor
        upcoming = [self.listing.peek(p) for p in (position + 1, position - 1)]
        preview.show(row.path, row.name, [r.path for r in upcoming if r is not None and r.path])
        self._load_detail(row.id)

    @property
    def loading(self) -> bool:
        """A listing is being counted and read."""
        return self._loading

    @property
    def idle(self) -> bool:
        """No write waiting and the selection shown (what tests and scripts wait for)."""
        images = self.image_list
        row = images.current_shown
        handled = images.count == 0 or (row is not None and self._shown == (images.cursor, row.id))
        return (
            self.pending_writes == 0
            and self._settle is None
            and not self._loading
            and not images.reading
            and handled
        )

    @work(thread=True, exclusive=True, group="detail")
    def _load_detail(self, image_id: int) -> None:
        report = browse.image_detail(self.catalog, image_id)
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._show_detail, image_id, report)

    def _show_detail(self, image_id: int, report: dict[str, Any] | None) -> None:
        if not self.is_running or not self.screen_stack:
            return
        current = self.image_list.current
        if current is None or current.id != image_id:
            return
        self.detail = report
        self.part("#detail", DetailPanel).show(report)

    def _current(self) -> browse.ImageRow | None:
        row = self.image_list.current
        if row is None:
            self.say("no image selected", error=True)
        return row

    # -- writes --------------------------------------------------------------------

    def write(self, call: Callable[[], Any], done: Callable[[Any], str]) -> None:
        """Run a library write on the writer thread, then say what it did and refresh."""
        self.pending_writes += 1
        loop = asyncio.get_running_loop()

        def task() -> None:
            try:
                result, error = call(), None
            except Exception as exc:  # reported on screen, never raised into the UI
                result, error = None, exc
            try:  # no waiting on the UI: it may be closing and waiting for this thread
                loop.call_soon_threadsafe(self._written, result, error, done)
            except RuntimeError:
                pass  # the app has gone; the write itself is done

        self._writer.submit(task)

    def _written(self, result: Any, error: Exception | None, done: Callable[[Any], str]) -> None:
        self.pending_writes -= 1
        if not self.is_running or not self.screen_stack:
            return
        if error is None:
            try:
                line = done(result)
            except Exception:  # a result of an unexpected shape: the write still happened
                line = "done"
            self.say(line)
        elif isinstance(error, CuratorError):
            self.say(f"error: {error}", error=True)
        else:
            self.say(f"error: {type(error).__name__}: {error}", error=True)
        self.refresh_list(announce=False)

    def refresh_list(self, *, announce: bool = True) -> None:
        """Read the listing again (everyone's changes show); the cursor keeps its place."""
        listing = Listing(self.catalog, self.listing.query, score=self.score, base=self.base)
        self.load(listing, None, "refresh" if announce else "quiet")

    def load(self, listing: Listing, position: int | None, reason: str) -> None:
        """Count a listing and read its page at `position` (None: where the cursor is) off
        the UI thread, then show it: a slow query never freezes the screen."""
        self._loading = True
        images = self.image_list
        span = max(images.scrollable_content_region.height, 1)
        self._load(listing, position if position is not None else images.cursor, span, reason)

    @work(thread=True, exclusive=True, group="listing")
    def _load(self, listing: Listing, position: int, span: int, reason: str) -> None:
        try:  # the screen's rows, so the list shows complete
            listing.load_pages(listing.pages_of(position - span, position + span))
        except CuratorError as error:
            self.call_from_thread(self._load_failed, f"error: {error}")
            return
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._loaded, listing, position, reason)

    def _load_failed(self, line: str) -> None:
        self._loading = False
        self.say(line, error=True)

    def _loaded(self, listing: Listing, position: int, reason: str) -> None:
        self._loading = False
        if reason in ("refresh", "quiet"):
            position = self.image_list.cursor  # the person may have moved meanwhile
        self.listing = listing
        self.image_list.set_listing(listing, position)
        if reason == "start":
            self._freeze_heap()  # the listing's rules and statements, read once
            self.say(self._count_line(), notify=False)
        elif reason == "filter":
            self.image_list.focus()
            self.say(f"filter applied: {self._count_line()}")
        elif reason == "refresh":
            self.say(f"refreshed: {self._count_line()}")

    def _review(self, status: str) -> None:
        row = self._current()
        if row is None:
            return
        self.write(
            lambda: browse.review_images(self.catalog, [row.id], status),
            lambda r: (
                f"{row.name}: {STATE_MARKS[status]}"
                + ("" if r.edit_id else f" (it already was {status})")
            ),
        )

    def action_accept(self) -> None:
        self._review(review.ACCEPTED)

    def action_reject(self) -> None:
        self._review(review.REJECTED)

    def _suggest(self, prefix: str) -> list[tuple[str, str, int]]:
        return browse.tag_suggestions(self.catalog, prefix)

    def action_add_tag(self) -> None:
        row = self._current()
        if row is None:
            return

        def add(tag: str | None) -> None:
            if not tag:
                self.say("no tag added", notify=False)
                return
            self.write(
                lambda: browse.tag_images(self.catalog, [row.id], [tag]),
                lambda r: (
                    f"{row.name}: added tag {tag}" if r.edit_id else f"{row.name}: {r.summary}"
                ),
            )

        self.push_screen(TagEntry(f"Add a tag to {row.name}", self._suggest), add)

    def action_remove_tag(self) -> None:
        row = self._current()
        if row is None:
            return
        report = self.detail if self.detail and self.detail["id"] == row.id else None
        if report is None:
            report = browse.image_detail(self.catalog, row.id)
        tags = report["tags"] if report else []
        if not tags:
            self.say(f"{row.name} has no tags to remove", error=True)
            return
        options = [
            (t["name"], f"{t['name']}  ({t['category']}, {', '.join(t['given_by'])})") for t in tags
        ]

        def remove(tag: str | None) -> None:
            if not tag:
                self.say("no tag removed", notify=False)
                return
            self.write(
                lambda: browse.untag_images(self.catalog, [row.id], [tag]),
                lambda r: f"{row.name}: removed tag {tag}",
            )

        self.push_screen(Choice(f"Remove which tag from {row.name}?", options), remove)

    def action_edit_caption(self) -> None:
        row = self._current()
        if row is None:
            return
        report = self.detail if self.detail and self.detail["id"] == row.id else None
        if report is None:
            report = browse.image_detail(self.catalog, row.id)
        captions = report["captions"] if report else []
        mine = [c for c in captions if c["source"] == USER_CAPTION and c["kind"] == "caption"]
        start = (mine or captions or [{"text": ""}])[0]["text"]

        def save(text: str | None) -> None:
            if text is None:
                self.say("caption unchanged", notify=False)
                return
            self.write(
                lambda: edits.set_caption(self.catalog, row.id, text),
                lambda done: f"{row.name}: caption saved" if done.images else "caption unchanged",
            )

        self.push_screen(CaptionEditor(start, CAPTION_NOTE), save)

    def action_undo(self) -> None:
        self.write(lambda: edits.undo(self.catalog), lambda undone: _edits_line("undid", undone))

    def action_redo(self) -> None:
        self.write(lambda: edits.redo(self.catalog), lambda done: _edits_line("redid", done))

    # -- filter --------------------------------------------------------------------

    def action_filter(self) -> None:
        self.part("#filter", FilterBar).focus()
        self.status.say("filter: type a query, Enter applies, Esc returns to the list")

    def on_filter_bar_applied(self, event: FilterBar.Applied) -> None:
        try:
            listing = Listing(self.catalog, event.query, score=self.score, base=self.base)
        except QueryError as error:
            self.say(f"query error: {error}", error=True)
            return
        self.status.say(f"filtering: {event.query or 'everything'}…")
        self.load(listing, 0, "filter")

    def action_back(self) -> None:
        bar = self.part("#filter", FilterBar)
        if bar.has_focus:
            bar.value = self.listing.query  # an unapplied edit is dropped
        self.image_list.focus()

    # -- bulk ----------------------------------------------------------------------

    def action_bulk(self) -> None:
        query = self.listing.query

        def canonical(tag: str) -> str:
            return browse.canonical_tag(self.catalog, tag)

        scope = f"the {self.listing.count():,} filtered images"

        def chosen(op: str | None) -> None:
            if op in ("accept", "reject"):
                self._bulk(lambda: bulk.review_op(query, op))
            elif op in ("add", "remove"):

                def tagged(tag: str | None) -> None:
                    if tag:
                        self._bulk(lambda: bulk.tag_op(query, op, tag, canonical))

                self.push_screen(TagEntry(f"Tag to {op} on {scope}", self._suggest), tagged)
            elif op == "replace":

                def replacement(old: str, new: str | None) -> None:
                    if new:
                        self._bulk(lambda: bulk.replace_op(query, old, new, canonical))

                def replaced(old: str | None) -> None:
                    if old:
                        entry = TagEntry(f"Replace {old} with", self._suggest)
                        self.push_screen(entry, lambda new: replacement(old, new))

                self.push_screen(TagEntry(f"Tag to replace on {scope}", self._suggest), replaced)

        self.push_screen(Choice(f"Bulk operation on {scope}", bulk.CHOICES), chosen)

    def _bulk(self, build: Callable[[], bulk.BulkOp]) -> None:
        try:
            op = build()
        except CuratorError as error:
            self.say(f"error: {error}", error=True)
            return
        self._confirm_bulk(op)

    def _confirm_bulk(self, op: bulk.BulkOp) -> None:
        self.status.say("counting the images that would change…")
        self._count_bulk(op)

    @work(thread=True, exclusive=True, group="bulk-count")
    def _count_bulk(self, op: bulk.BulkOp) -> None:
        try:
            count = Listing(self.catalog, op.changes_query, base=self.base).count()
        except CuratorError as error:
            self.call_from_thread(self.say, f"error: {error}", error=True)
            return
        self.call_from_thread(self._ask_bulk, op, count)

    def _ask_bulk(self, op: bulk.BulkOp, count: int) -> None:
        if count == 0:
            self.say(f"nothing to do: {op.describe(0)}")
            return

        def answer(yes: bool | None) -> None:
            if not yes:
                self.say("bulk operation cancelled; nothing changed")
                return
            self.write(
                lambda: op.apply(self.catalog),
                lambda r: f"done: {r.summary} (one edit; u undoes it)",
            )

        question = f"{op.describe(count)}?"
        self.status.say(f"{question} (y or n)")
        self.push_screen(Confirm(question), answer)

    # -- duplicates, frequency, help -------------------------------------------------

    def action_duplicates(self) -> None:
        row = self._current()
        if row is None:
            return
        report = browse.image_detail(self.catalog, row.id)
        group = report["duplicates"] if report else None
        if not group:
            self.say(f"{row.name} is in no duplicate group")
            return
        options = [
            (
                str(m["id"]),
                f"{'keeper' if m['keeper'] else 'duplicate'}: "
                f"{m['name']} {m['size']} {m['status']}",
            )
            for m in group
        ]

        def jump(choice: str | None) -> None:
            if choice is None:
                return
            position = self.listing.position_of(int(choice))
            if position is None:
                self.say("that image is outside the current filter (/ to change it)", error=True)
                return
            self.image_list.move_to(position)
            self.image_list.focus()

        self.push_screen(Choice(f"Duplicate group of {row.name} ({len(group)})", options), jump)

    def action_frequency(self) -> None:
        query = self.listing.query
        title = f"Most used tags {'in ' + repr(query) if query else 'in the catalog'}"
        self.push_screen(FrequencyPanel(title, lambda: browse.tag_counts(self.catalog, query)))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_refresh(self) -> None:
        self.refresh_list()


def _edits_line(verb: str, described: Any) -> str:
    """`undid: add x to 1 of 1 images` from what undo/redo return (dicts, newest first)."""
    items = list(described or [])
    if not items:
        return f"nothing to {'undo' if verb == 'undid' else 'redo'}"
    first = items[0]
    summary = first.get("summary") if isinstance(first, dict) else getattr(first, "summary", None)
    return f"{verb}: {summary or first}"
