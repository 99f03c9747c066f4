"""Editing a person's caption of the selected image."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, TextArea

from tui.bindings import CAPTION
from tui.components.dialog import Dialog


class CaptionEditor(Dialog[str]):
    """Returns the new text (Ctrl+S), or None on Esc; empty text removes the caption."""

    BINDINGS = [*Dialog.BINDINGS, *CAPTION]

    def __init__(self, text: str, note: str) -> None:
        super().__init__()
        self.text = text
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Caption (Ctrl+S saves, Esc cancels)", classes="dialog-title")
            yield TextArea(self.text, id="caption-text", soft_wrap=True)
            yield Label(self.note, classes="hint")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)
