"""One line of text naming the last thing that happened, for eyes and screen readers."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class StatusLine(Widget):
    """Keeps the last message; `history` keeps them all (what `?` and tests read).

    A plain widget of fixed height rather than a `Static`: a new message repaints one
    line instead of laying out the whole screen, which matters while a key is held.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history: list[str] = []
        self._later: str | None = None

    def say(self, text: str) -> None:
        self.flush()
        self.history.append(text)
        self.refresh()

    def say_later(self, text: str) -> None:
        """Say `text` at the next `flush` (or before the next `say`), replacing what was
        to be said: while a key is held, the line changes once when it is let go instead
        of on every step (a repaint of this line repaints the screen between it and the
        list)."""
        self._later = text

    def flush(self) -> None:
        if self._later is not None:
            text, self._later = self._later, None
            self.say(text)

    def render(self) -> Text:
        return Text(self.history[-1] if self.history else "", no_wrap=True, overflow="ellipsis")
