"""How many of the filtered images have each tag."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label

from tui.components.dialog import Dialog

Counts = Callable[[], list[dict[str, Any]]]


class FrequencyPanel(Dialog[None]):
    """Counted in a thread: on a large catalog this takes a moment."""

    def __init__(self, title: str, counts: Counts) -> None:
        super().__init__()
        self.title_text = title
        self.counts = counts

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label("counting…", id="frequency-state", classes="hint")
            yield DataTable(id="frequency-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("images", "tag", "category")
        table.focus()
        self._count()

    @work(thread=True, exclusive=True)
    def _count(self) -> None:
        try:
            rows, problem = self.counts(), None
        except Exception as error:  # shown, never raised into the UI
            rows, problem = [], str(error)
        self.app.call_from_thread(self._show, rows, problem)

    def _show(self, rows: list[dict[str, Any]], problem: str | None) -> None:
        table = self.query_one(DataTable)
        for r in rows:
            table.add_row(f"{r['images']:,}", r["name"], r["category"])
        state = problem or f"{len(rows)} most used tags"
        self.query_one("#frequency-state", Label).update(state)
