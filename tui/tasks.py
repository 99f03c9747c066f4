"""Long runs started from the app (tag, detect, dedup, export of the filtered set).

Each is a `Job`: a title and a function of a `Reporter` and a `CancelToken` that calls
one library function and returns a line saying what it did. The app runs it in a
worker thread; `UiReporter` carries the library's progress events to the task bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curator.progress import CancelToken, Reporter

if TYPE_CHECKING:  # the catalog's type only: tui/ calls the library, not db/
    from db.engine import Catalog

REFRESH_EVERY_S = 2.0  # the list shows results as they land, this often at most


@dataclass(frozen=True, slots=True)
class Job:
    title: str
    run: Callable[[Reporter, CancelToken], str]


class UiReporter:
    """Forwards progress to the UI thread and refreshes the list as results land.

    Cancelling is the library's business: runs and exports poll the token at batch
    boundaries, record what finished and raise `Cancelled`.
    """

    def __init__(
        self,
        call: Callable[..., object],
        begin: Callable[[str, int | None], None],
        set_total: Callable[[int | None], None],
        advance: Callable[[int], None],
        landed: Callable[[], None],
    ) -> None:
        self._call = call
        self._begin = begin
        self._set_total = set_total
        self._advance = advance
        self._landed = landed
        self._last_refresh = time.monotonic()

    def start(self, description: str, total: int | None = None) -> None:
        self._call(self._begin, description, total)

    def set_total(self, total: int | None) -> None:
        self._call(self._set_total, total)

    def advance(self, n: int = 1) -> None:
        self._call(self._advance, n)
        if time.monotonic() - self._last_refresh >= REFRESH_EVERY_S:
            self._last_refresh = time.monotonic()
            self._call(self._landed)

    def finish(self) -> None:
        pass


def model_job(catalog: Catalog, query: str, specs: list[str], kind: str) -> Job:
    """Tag (`kind` "tag") or detect (`kind` "detect") with models named as on the CLI."""

    def run(reporter: Reporter, cancel: CancelToken) -> str:
        from curator.catalog.browse import run_named_models

        summaries = run_named_models(catalog, specs, query, kind, reporter, cancel)
        return "; ".join(
            f"{s.model}: {s.done} images, {s.tags} tags, {s.failed} failed, "
            f"{s.skipped} already done"
            for s in summaries
        )

    return Job(f"{kind} with {', '.join(specs)}", run)


def dedup_job(catalog: Catalog, query: str, method: str = "phash") -> Job:
    def run(reporter: Reporter, cancel: CancelToken) -> str:
        from curator.curation.dedup import dedup

        # Finding groups is one step that cannot stop midway; it is checked after.
        reporter.start(f"dedup ({method})", None)
        result = dedup(catalog, method, query=query)
        reporter.finish()
        return f"dedup: {len(result.groups)} groups, {result.marked} images marked"

    return Job(f"dedup ({method}; finishes once started)", run)


def export_job(catalog: Catalog, query: str, target: str, layout: str | None = None) -> Job:
    def run(reporter: Reporter, cancel: CancelToken) -> str:
        from curator.export import ExportOptions, export

        summary = export(
            catalog,
            target,
            ExportOptions(query=query, reporter=reporter, cancel=cancel),
            **({"layout": layout} if layout else {}),
        )
        return (
            f"exported {summary.exported} of {summary.selected} images to {summary.target}, "
            f"{len(summary.skipped)} skipped"
        )

    return Job(f"export to {target}", run)
