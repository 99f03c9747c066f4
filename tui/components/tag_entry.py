"""Entering a tag, with suggestions from the catalog's tags and their image counts.

Enter takes exactly what was typed (new tags are welcome); a suggestion is used only
when chosen explicitly: ↓ (or Tab) into the list, then Enter or a click.
"""

from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from tui.bindings import TAG_ENTRY
from tui.components.dialog import Dialog

Suggest = Callable[[str], list[tuple[str, str, int]]]


class TagEntry(Dialog[str]):
    """Returns the tag to use, or None on Esc."""

    BINDINGS = [*Dialog.BINDINGS, *TAG_ENTRY]

    def __init__(self, title: str, suggest: Suggest, value: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.suggest = suggest
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(value=self.value, placeholder="tag (Enter: use as typed)", id="tag-input")
            yield Label("suggestions (↓ to choose):", classes="hint")
            yield OptionList(id="tag-suggestions")

    def on_mount(self) -> None:
        self.query_one("#tag-input", Input).focus()

    def action_suggestions(self) -> None:
        options = self.query_one("#tag-suggestions", OptionList)
        if options.option_count:
            options.focus()
            options.highlighted = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self._lookup(event.value)

    @work(thread=True, exclusive=True, group="suggest")
    def _lookup(self, prefix: str) -> None:
        found = self.suggest(prefix) if prefix.strip() else []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, found)

    def _show(self, found: list[tuple[str, str, int]]) -> None:
        options = self.query_one("#tag-suggestions", OptionList)
        options.clear_options()
        options.add_options(
            Option(f"{name}  ({images} images, {category})", id=name)
            for name, category, images in found
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.dismiss(event.value.strip())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)
