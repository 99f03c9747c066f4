"""Progress of a long run (tag, detect, dedup, export) with a way to cancel it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Label, ProgressBar


class TaskBar(Horizontal):
    """Hidden until a run starts; the Cancel button (or `C`) asks the run to stop."""

    class CancelPressed(Message):
        pass

    def compose(self) -> ComposeResult:
        yield Label("", id="task-label")
        yield ProgressBar(id="task-progress", show_eta=True)
        yield Button("Cancel (C)", id="task-cancel", variant="error")

    def begin(self, description: str, total: int | None) -> None:
        self.display = True
        self.query_one("#task-label", Label).update(description)
        self.query_one("#task-progress", ProgressBar).update(total=total, progress=0)

    def set_total(self, total: int | None) -> None:
        self.query_one("#task-progress", ProgressBar).update(total=total)

    def advance(self, n: int) -> None:
        self.query_one("#task-progress", ProgressBar).advance(n)

    def end(self) -> None:
        self.display = False

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.CancelPressed())
