"""The keys at the foot of the screen, read from `tui.bindings`.

Drawn as one line of text: Textual's `Footer` builds a widget per key and rebuilds
them as focus moves, which cost most of the app's start-up time.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tui.bindings import APP, describe


class KeyBar(Widget):
    DEFAULT_CSS = "KeyBar { height: 1; }"

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        shown = [b for b in APP if b.show]
        # Help and quit first: on a narrow terminal the line is cut at the right.
        first = [b for b in shown if b.action in ("help", "quit")]
        for binding in first + [b for b in shown if b not in first]:
            keys, what = describe(binding)
            out.append(keys, style="reverse")
            out.append(f" {what} ")
        return out
