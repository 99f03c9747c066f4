"""Pictures of the review app's main screens, compared with the ones kept in the tree.

After a deliberate change of the screens: `pytest tests/test_tui_snapshots.py
--snapshot-update`, then look at the new pictures before committing them.
"""

from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("textual_image")
pytest.importorskip("pytest_textual_snapshot")

from curator.curation import edits  # noqa: E402
from curator.ingest.scan import ScanOptions, scan  # noqa: E402
from tests.test_tui import settle  # noqa: E402
from tui.app import ReviewApp  # noqa: E402

SIZE = (120, 36)


@pytest.fixture
def app(catalog, corpus, monkeypatch):
    monkeypatch.chdir(corpus.parent)  # paths show relative to the working folder
    scan(catalog, [corpus], ScanOptions(workers=1))
    edits.add_tags(catalog, "format:jpeg", ["blue_sky"])
    return ReviewApp(catalog, "folder:images/sub")


def test_main_screen(app, snap_compare):
    async def ready(pilot) -> None:  # noqa: ANN001
        await settle(pilot.app, pilot)
        await pilot.press("j", "j")
        await settle(pilot.app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_help_screen(app, snap_compare):
    async def ready(pilot) -> None:  # noqa: ANN001
        await settle(pilot.app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_bulk_confirmation(app, snap_compare):
    async def ready(pilot) -> None:  # noqa: ANN001
        await settle(pilot.app, pilot)
        await pilot.press("b", "enter", *"blue_sky", "enter")
        await settle(pilot.app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
