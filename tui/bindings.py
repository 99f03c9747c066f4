"""Every key of the review app, in one place (the footer and `?` read them from here)."""

from __future__ import annotations

from textual.binding import Binding

# Keys of the image list: they act only while the list has focus, so a text field
# that has focus keeps its arrow keys and letters.
LIST = [
    Binding("j,down", "cursor_down", "Next", show=False),
    Binding("k,up", "cursor_up", "Previous", show=False),
    Binding("pagedown", "page_down", "Page down", show=False),
    Binding("pageup", "page_up", "Page up", show=False),
    Binding("g,home", "first", "First", show=False),
    Binding("G,end", "last", "Last", show=False),
]

# Keys of the whole app.
APP = [
    Binding("a", "accept", "Accept"),
    Binding("x", "reject", "Reject"),
    Binding("t", "add_tag", "Add tag"),
    Binding("d", "remove_tag", "Remove tag"),
    Binding("e", "edit_caption", "Caption"),
    Binding("u", "undo", "Undo"),
    Binding("ctrl+r", "redo", "Redo"),
    Binding("slash", "filter", "Filter"),
    Binding("b", "bulk", "Bulk"),
    Binding("D", "duplicates", "Duplicates"),
    Binding("f", "frequency", "Tag counts"),
    Binding("w", "work", "Run…"),
    Binding("C", "cancel_work", "Cancel run", show=False),
    Binding("r", "refresh", "Refresh"),
    Binding("question_mark", "help", "Help"),
    Binding("escape", "back", "Back to list", show=False),
    Binding("q", "quit", "Quit"),
]

# Keys inside dialogs.
DIALOG = [Binding("escape", "cancel", "Cancel")]
CONFIRM = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No")]
TAG_ENTRY = [Binding("down", "suggestions", "Choose a suggestion", show=False)]
CAPTION = [Binding("ctrl+s", "save", "Save caption")]


def describe(binding: Binding) -> tuple[str, str]:
    """(keys as a person types them, what they do)."""
    names = {
        "down": "↓",
        "up": "↑",
        "pagedown": "PgDn",
        "pageup": "PgUp",
        "home": "Home",
        "end": "End",
        "slash": "/",
        "question_mark": "?",
        "escape": "Esc",
        "ctrl+r": "Ctrl+R",
        "ctrl+s": "Ctrl+S",
    }
    keys = " ".join(names.get(k, k) for k in binding.key.split(","))
    return keys, binding.description


HELP = [
    ("Image list", LIST),
    ("Everywhere", APP),
    ("Dialogs", DIALOG + CONFIRM),
    ("Tag entry (Enter takes what you typed; ↓ then Enter takes a suggestion)", TAG_ENTRY),
    ("Caption editor", CAPTION),
]
