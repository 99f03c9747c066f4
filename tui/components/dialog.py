"""What every dialog shares: Esc cancels, focus returns to the list after."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen

from tui.bindings import DIALOG

T = TypeVar("T")


class Dialog(ModalScreen[T]):
    BINDINGS = DIALOG

    def action_cancel(self) -> None:
        self.dismiss(None)
