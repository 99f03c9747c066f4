"""Progress and cancellation for long library calls, with no terminal code.

Long calls (scan, runs, dedup, export, prepare) take a `Reporter` and a `CancelToken`.
The library announces phases and advances them; the faces decide how to show that:
the CLI draws a rich bar (`curator.cli.progress`), the review app its own widget.
A cancelled call stops at the next batch boundary, keeps what it wrote, records its
run as ``cancelled`` and raises `Cancelled`; a later call resumes like after a kill.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from curator.errors import Cancelled


class Reporter(Protocol):
    """Receives progress events; implementations must be cheap and never raise."""

    def start(self, description: str, total: int | None = None) -> None:
        """A new phase begins (``total`` items, or unknown)."""

    def set_total(self, total: int | None) -> None:
        """The current phase's total became known or changed."""

    def advance(self, n: int = 1) -> None:
        """``n`` more items of the current phase are done."""

    def finish(self) -> None:
        """The current phase ended."""


class NullReporter:
    """Reports nowhere: the default for library calls."""

    def start(self, description: str, total: int | None = None) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


class CancelToken:
    """Set from any thread (a UI's cancel button, a signal handler); polled by the library."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if cancellation was asked for."""
        if self._event.is_set():
            raise Cancelled("cancelled; finished work is saved, run again to resume")


class RunOutcome:
    """How a long call ended, as `runs.status` records it; read it in a ``finally``.

    ``with outcome.track():`` around the work sets ``finished``, ``cancelled`` (a
    `CancelToken`), ``interrupted`` (Ctrl-C) or leaves ``failed`` (any other error).
    """

    def __init__(self) -> None:
        self.status = "failed"

    @contextmanager
    def track(self) -> Iterator[RunOutcome]:
        try:
            yield self
        except Cancelled:
            self.status = "cancelled"
            raise
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        self.status = "finished"


@contextmanager
def phase(
    reporter: Reporter | None, description: str, total: int | None = None
) -> Iterator[Reporter]:
    """Announce a phase on ``reporter`` (or nowhere) and end it however the block exits."""
    r = reporter if reporter is not None else NullReporter()
    r.start(description, total)
    try:
        yield r
    finally:
        r.finish()
