"""One line of text naming the last thing that happened, for eyes and screen readers."""

from __future__ import annotations

from textual.widgets import Static


class StatusLine(Static):
    """Keeps the last message; `history` keeps them all for tests and `?`."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.history: list[str] = []

    def say(self, text: str) -> None:
        self.history.append(text)
        self.update(text)
