"""Every key, read from `tui.bindings`."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.bindings import HELP, describe
from tui.components.dialog import Dialog


def help_text() -> Text:
    out = Text()
    for title, bindings in HELP:
        out.append(f"{title}:\n", style="bold")
        for binding in bindings:
            keys, what = describe(binding)
            out.append(f"  {keys:<14} {what}\n")
        out.append("\n")
    out.append("Esc closes this list.")
    return out


class HelpScreen(Dialog[None]):
    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Static(help_text(), id="help-text")
