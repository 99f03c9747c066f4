"""The CLI's `Reporter`: a rich bar on stderr with count, images/s and ETA."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "img")
        text = f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s"
        return Text(text, style="progress.data.speed")


def stderr_console() -> Console:
    return Console(stderr=True, no_color="NO_COLOR" in os.environ or None)


class RichReporter:
    """One bar per phase; silent when disabled or when stderr is not a terminal."""

    def __init__(self, enabled: bool = True):
        self._enabled = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None = None) -> None:
        if not self._enabled:
            return
        self.finish()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeRemainingColumn(),
            console=stderr_console(),
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def set_total(self, total: int | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def describe(self, text: str, unit: str | None = None) -> None:
        """Replace the current bar's description (training shows its loss there) and,
        when given, the unit its rate counts (`it` for optimizer steps)."""
        if self._progress is not None and self._task is not None:
            fields = {"unit": unit} if unit else {}
            self._progress.update(self._task, description=text, **fields)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
