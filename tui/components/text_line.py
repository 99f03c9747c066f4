"""One line of text that repaints without laying out the screen again."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class TextLine(Widget):
    """Fixed at one line: a `Static` would ask for a layout on every update, which
    costs a frame while a key is held."""

    DEFAULT_CSS = "TextLine { height: 1; }"

    text: reactive[str] = reactive("", layout=False)

    def __init__(self, text: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(TextLine.text, text)

    def render(self) -> Text:
        return Text(self.text, no_wrap=True, overflow="ellipsis", justify="center")
