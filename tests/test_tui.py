"""The review app, driven by keys through Textual's Pilot, checked in the catalog."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("textual")
pytest.importorskip("textual_image")

from click.testing import CliRunner  # noqa: E402
from sqlalchemy import select  # noqa: E402

from curator.cli import main  # noqa: E402
from curator.curation import edits  # noqa: E402
from curator.ingest.scan import ScanOptions, scan  # noqa: E402
from curator.tags.view import effective_tags  # noqa: E402
from db.schema import Caption, File, Image  # noqa: E402
from tui.app import ReviewApp  # noqa: E402
from tui.components.confirm import Confirm  # noqa: E402
from tui.components.filter_bar import FilterBar  # noqa: E402
from tui.components.preview import ImageWidget  # noqa: E402
from tui.components.tag_entry import TagEntry  # noqa: E402
from tui.tasks import Job, export_job  # noqa: E402

SIZE = (140, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def scanned(catalog, corpus):
    scan(catalog, [corpus], ScanOptions(workers=1))
    return corpus


async def settle(app: ReviewApp, pilot) -> None:  # noqa: ANN001
    """Wait for writes on the writer thread and for the app's workers."""
    for _ in range(400):
        await pilot.pause(0.02)
        await app.workers.wait_for_complete()
        if app.idle:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            return
    raise AssertionError("the app kept working")


def image_id(catalog, name: str) -> int:
    with catalog.session() as s:
        return s.scalar(select(File.image_id).where(File.path.endswith("/" + name)))


def tags_of(catalog, name: str) -> set[str]:
    with catalog.session() as s:
        i = image_id(catalog, name)
        return {t.name for t in effective_tags(s, [i])[i]}


def status_of(catalog, name: str) -> str:
    with catalog.session() as s:
        return s.get(Image, image_id(catalog, name)).status


async def go_to(app: ReviewApp, pilot, name: str) -> None:  # noqa: ANN001
    await pilot.press("g")
    for _ in range(app.listing.count()):
        if app.image_list.current.name == name:
            await settle(app, pilot)
            return
        await pilot.press("j")
    raise AssertionError(f"{name} is not in the list")


async def test_keys_move_through_the_list(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        listing = app.image_list
        count = listing.count
        assert count == 17
        assert app.status.history[:2] == ["counting images…", "17 images in the catalog"]
        await pilot.press("j", "j", "down")
        assert listing.cursor == 3
        await pilot.press("k", "up")
        assert listing.cursor == 1
        await pilot.press("G")
        assert listing.cursor == count - 1
        await pilot.press("j")  # stays on the last image
        assert listing.cursor == count - 1
        await pilot.press("g")
        assert listing.cursor == 0
        await pilot.press("pagedown")
        page = listing.cursor
        assert 0 < page < count
        await pilot.press("pageup")
        assert listing.cursor == 0
        await settle(app, pilot)
        assert app.status.history[-1].startswith(f"image 1 of {count}: ")
        # The selected image is previewed and described.
        first = listing.current
        assert app.query_one("#preview-image", ImageWidget).image is not None
        assert app.detail is not None and app.detail["id"] == first.id
        # The next image was decoded meanwhile: one step down shows it from the cache.
        cached = {path for path, _ in app.query_one("#preview")._cache}
        assert {first.path, listing.listing.row(1).path} <= cached
        # Arrow keys belong to a text field while it has focus; Esc gives them back.
        await pilot.press("slash")
        assert isinstance(app.focused, FilterBar)
        await pilot.press("down", "j")
        assert listing.cursor == 0 and app.focused.value == "j"
        await pilot.press("escape")
        assert app.focused is listing and app.query_one(FilterBar).value == ""
        await pilot.press("down")
        assert listing.cursor == 1


async def test_accept_and_reject_are_kept_and_undone(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        first = app.image_list.current.name
        await pilot.press("a")
        await settle(app, pilot)
        assert status_of(catalog, first) == "accepted"
        assert app.status.history[-1] == f"{first}: ✓ accepted"
        assert app.image_list.current.status == "accepted"
        await pilot.press("j", "x")
        await settle(app, pilot)
        second = app.image_list.current.name
        assert status_of(catalog, second) == "rejected"
        await pilot.press("u")
        await settle(app, pilot)
        assert status_of(catalog, second) == "pending"
        assert status_of(catalog, first) == "accepted"
        assert any(line.startswith("undid: reject") for line in app.status.history)


async def test_tag_entry_takes_what_was_typed_unless_a_suggestion_is_chosen(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await go_to(app, pilot, "rgb.png")
        # "smi" has a suggestion (smile, from a sidecar) but Enter takes "smi".
        await pilot.press("t", *"smi")
        await settle(app, pilot)
        entry = app.screen
        assert isinstance(entry, TagEntry)
        suggestions = entry.query_one("#tag-suggestions")
        assert suggestions.option_count == 1
        assert "smile" in str(suggestions.get_option_at_index(0).prompt)
        assert "1 images" in str(suggestions.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await settle(app, pilot)
        assert tags_of(catalog, "rgb.png") == {"smi"}
        # Choosing the suggestion explicitly: ↓ into the list, Enter.
        await pilot.press("t", *"smi")
        await settle(app, pilot)
        options = app.screen.query_one("#tag-suggestions")
        found = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert found == ["smi", "smile"]  # as many images each: by name
        await pilot.press("down", "down", "enter")
        await settle(app, pilot)
        assert tags_of(catalog, "rgb.png") == {"smi", "smile"}
        # Undo the last add; redo puts it back.
        await pilot.press("u")
        await settle(app, pilot)
        assert tags_of(catalog, "rgb.png") == {"smi"}
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert tags_of(catalog, "rgb.png") == {"smi", "smile"}


async def test_removing_a_tag_picks_from_the_images_tags_and_undo_brings_it_back(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await go_to(app, pilot, "captioned.png")
        before = tags_of(catalog, "captioned.png")
        assert "smile" in before
        await pilot.press("d")
        await settle(app, pilot)
        options = app.screen.query_one("OptionList")
        names = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert sorted(names) == sorted(before)
        await pilot.press(*["down"] * names.index("smile"), "enter")
        await settle(app, pilot)
        assert tags_of(catalog, "captioned.png") == before - {"smile"}
        assert "sidecar" in app.detail["tag_groups"]["general"][0]["given_by"]
        await pilot.press("u")
        await settle(app, pilot)
        assert tags_of(catalog, "captioned.png") == before


async def test_the_filter_bar_applies_a_query_and_explains_a_bad_one(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("slash", *"format:jpeg", "enter")
        await settle(app, pilot)
        assert app.image_list.count == 4
        assert "filter applied: 4 images matching 'format:jpeg'" in app.status.history
        assert app.focused is app.image_list
        names = {app.listing.row(i).name for i in range(4)}
        assert names == {"portrait.jpg", "cmyk.jpg", "rotated.jpg", "a1111.jpg"}
        await pilot.press("slash", "ctrl+u", *"width>>3", "enter")
        await settle(app, pilot)
        assert app.status.history[-1].startswith("query error: ")
        assert app.image_list.count == 4  # the previous filter stays


async def test_a_bulk_operation_states_its_count_and_is_one_edit(catalog, scanned):
    app = ReviewApp(catalog, "format:jpeg")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await go_to(app, pilot, "cmyk.jpg")
        await pilot.press("t", *"blue", "enter")  # one of the four has it already
        await settle(app, pilot)
        history_before = len(edits.history(catalog, None))
        await pilot.press("b")
        await settle(app, pilot)
        await pilot.press("enter")  # "Add a tag", the first choice
        await settle(app, pilot)
        await pilot.press(*"blue", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, Confirm)
        question = str(app.screen.query_one("#confirm-question").render())
        assert question.startswith('Add "blue" to 3 images')
        await pilot.press("y")
        await settle(app, pilot)
        for name in ("portrait.jpg", "cmyk.jpg", "rotated.jpg", "a1111.jpg"):
            assert "blue" in tags_of(catalog, name)
        assert "blue" not in tags_of(catalog, "rgb.png")
        assert len(edits.history(catalog, None)) == history_before + 1
        await pilot.press("u")
        await settle(app, pilot)
        assert {
            n for n in ("portrait.jpg", "rotated.jpg") if "blue" in tags_of(catalog, n)
        } == set()
        assert "blue" in tags_of(catalog, "cmyk.jpg")
        # Declining changes nothing.
        await pilot.press("b")
        await settle(app, pilot)
        await pilot.press(*["down"] * 3, "enter")  # "Accept all"
        await settle(app, pilot)
        assert "Accept 4 images" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("n")
        await settle(app, pilot)
        assert status_of(catalog, "cmyk.jpg") == "pending"
        assert app.status.history[-1] == "bulk operation cancelled; nothing changed"


async def test_a_cancelled_export_leaves_no_target(catalog, scanned, tmp_path: Path):
    target = tmp_path / "dataset"
    real = export_job(catalog, "", str(target))
    first_batch, go_on = threading.Event(), threading.Event()

    class HeldReporter:
        """Holds the run at its first batch boundary until the test has pressed C."""

        def __init__(self, inner):  # noqa: ANN001
            self.inner = inner

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self.inner, name)

        def advance(self, n: int = 1) -> None:
            first_batch.set()
            assert go_on.wait(60)
            self.inner.advance(n)

    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.start_job(Job(real.title, lambda rep, tok: real.run(HeldReporter(rep), tok)))
        for _ in range(300):
            if first_batch.is_set() or app.cancel_token is None:
                break
            await pilot.pause(0.1)
        assert first_batch.is_set(), app.status.history
        assert app.query_one("#task-bar").display
        await pilot.press("C")
        assert app.status.history[-1] == "cancelling after the current batch…"
        go_on.set()
        await settle(app, pilot)
        assert app.status.history[-1].startswith("cancelled: export to ")
        assert not app.query_one("#task-bar").display
        assert app.cancel_token is None
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("dataset")] == []


async def test_a_concurrent_cli_write_shows_after_refresh(catalog, scanned, db_path):
    app = ReviewApp(catalog, "format:png")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        first = app.image_list.current
        assert first.status == "pending"
        result = CliRunner().invoke(main, ["--db", str(db_path), "accept", "format:png"])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(
            main, ["--db", str(db_path), "tags", "add", "format:png", "cli_tag"]
        )
        assert result.exit_code == 0, result.output
        await pilot.press("r")
        await settle(app, pilot)
        row = app.image_list.current
        assert row.id == first.id and row.status == "accepted" and row.tags == first.tags + 1
        assert app.status.history[-1].startswith("refreshed: ")
        assert any(t["name"] == "cli_tag" for t in app.detail["tags"])


async def test_help_lists_every_key_and_esc_returns(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help-text").render())
        for keys in ("j ↓", "PgDn", "G End", "Ctrl+R", "D ", "Esc", "Enter takes what you typed"):
            assert keys in text
        await pilot.press("escape")
        assert app.focused is app.image_list
        await pilot.press("D")
        await settle(app, pilot)
        assert app.status.history[-1].endswith("is in no duplicate group")


def test_the_command_refuses_a_bad_query_in_one_line(catalog, db_path):
    result = CliRunner().invoke(main, ["--db", str(db_path), "review", "width>>3"])
    assert result.exit_code != 0
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    help_text = CliRunner().invoke(main, ["review", "--help"]).output
    assert "--score" in help_text and "QUERY" in help_text


async def test_a_write_that_lands_under_a_dialog_is_reported(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        first = app.image_list.current.name
        await pilot.press("a", "question_mark")
        await settle(app, pilot)
        assert app.screen.query("#help-text")  # the help is still open
        assert f"{first}: ✓ accepted" in app.status.history
        await pilot.press("escape")
        assert app.image_list.current.status == "accepted"


async def test_the_detail_panel_and_a_caption_edit(catalog, scanned):
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await go_to(app, pilot, "a1111.png")
        text = app.query_one("#detail").plain
        assert "Generation parameters:" in text and "steps: 28" in text
        assert "sampler: DPM++ 2M Karras" in text
        await go_to(app, pilot, "captioned.png")
        text = app.query_one("#detail").plain
        assert "smile  1.00  (sidecar)" in text
        await pilot.press("e")
        await settle(app, pilot)
        area = app.screen.query_one("#caption-text")
        area.text = "a girl smiling under a blue sky"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.status.history[-1] == "captioned.png: caption saved"
        captions = {(c["source"], c["text"]) for c in app.detail["captions"]}
        assert ("user", "a girl smiling under a blue sky") in captions
        await pilot.press("e", "escape")
        await settle(app, pilot)
        assert app.status.history[-1] == "caption unchanged"
        await pilot.press("u")  # a caption edit undoes like any other
        await settle(app, pilot)
        assert app.status.history[-1].startswith("undid")
        with catalog.session() as s:
            assert not s.query(Caption).filter_by(source="user").count()


async def test_tag_frequencies_of_the_filtered_set(catalog, scanned):
    edits.add_tags(catalog, "format:png", ["pngtag"])
    edits.add_tags(catalog, "format:jpeg", ["jpegtag"])
    app = ReviewApp(catalog, "format:png")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f")
        await settle(app, pilot)
        table = app.screen.query_one("#frequency-table")
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        pngs = app.image_list.count
        assert rows[0][1:] == ["pngtag", "general"] and rows[0][0] == str(pngs)
        assert all(r[1] != "jpegtag" for r in rows)


async def test_jumping_within_a_duplicate_group(catalog, scanned):
    from PIL import Image as PILImage

    from curator.curation.dedup import dedup

    with PILImage.open(scanned / "rgb.png") as im:
        im.save(scanned / "rgb_copy.bmp")
    scan(catalog, [scanned], ScanOptions(workers=1))
    assert len(dedup(catalog, "phash").groups) == 1
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await go_to(app, pilot, "rgb.png")
        text = app.query_one("#detail").plain
        assert "Duplicate group:" in text and "rgb_copy.bmp" in text
        await pilot.press("D")
        await settle(app, pilot)
        options = app.screen.query_one("OptionList")
        labels = [str(options.get_option_at_index(i).prompt) for i in range(2)]
        other = next(i for i, label in enumerate(labels) if "rgb_copy.bmp" in label)
        await pilot.press(*["down"] * other, "enter")
        await settle(app, pilot)
        assert app.image_list.current.name == "rgb_copy.bmp"


async def test_tagging_the_filtered_set_from_the_app(catalog, scanned, tmp_path: Path):
    from tests.fixtures.tiny_models import build_wd14_model

    tagger = build_wd14_model(tmp_path / "tiny-tagger", size=32)
    app = ReviewApp(catalog, "format:png")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.image_list.current.tags == 0 or app.image_list.current.name == "captioned.png"
        await pilot.press("w", "enter")  # the first choice: a tagger
        await settle(app, pilot)
        await pilot.press("ctrl+u", *str(tagger), "enter")
        for _ in range(600):
            await pilot.pause(0.1)
            if app.cancel_token is None:
                break
        await settle(app, pilot)
        pngs = app.image_list.count
        assert app.status.history[-1].startswith(f"tiny-tagger: {pngs} images")
        assert not app.query_one("#task-bar").display
        # The list was read again: the tagger's tags are counted.
        assert all(app.listing.row(i).tags > 0 for i in range(pngs))
        with catalog.session() as s:
            done = effective_tags(s, [image_id(catalog, "rgb.png")])
        assert any(t.sources == ("model:tiny-tagger",) for t in next(iter(done.values())))


async def test_no_color_draws_every_cell_in_greys(catalog, scanned, monkeypatch):
    import re

    monkeypatch.setenv("NO_COLOR", "1")
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("a")  # an accepted row: marked in words, not only in colour
        await settle(app, pilot)
        picture = app.export_screenshot()
    colours = set(re.findall(r"(?:fill|background)[:=]\s*\"?#([0-9a-fA-F]{6})", picture))
    assert colours
    # Rich draws a window frame around every screenshot: its three buttons and title.
    frame = {"ff5f57", "febc2e", "28c840", "c5c8c6"}
    coloured = sorted(c for c in colours - frame if not c[0:2] == c[2:4] == c[4:6])
    assert not coloured, coloured[:5]


async def test_bulk_replace_counts_through_aliases_and_refuses_odd_names(catalog, scanned):
    from curator.tags.rules import add_alias

    edits.add_tags(catalog, "format:png", ["sky"])
    add_alias(catalog, "heavens", "sky")
    app = ReviewApp(catalog, "format:png")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        pngs = app.image_list.count
        await pilot.press("b", "down", "down", "enter")  # "Replace a tag with another"
        await settle(app, pilot)
        await pilot.press(*"heavens", "enter")
        await settle(app, pilot)
        await pilot.press(*"clouds", "enter")
        await settle(app, pilot)
        question = str(app.screen.query_one("#confirm-question").render())
        assert question.startswith(f'Replace "sky" with "clouds" on {pngs} images')
        await pilot.press("y")
        await settle(app, pilot)
        assert "clouds" in tags_of(catalog, "rgb.png") and "sky" not in tags_of(catalog, "rgb.png")
        await pilot.press("b", "enter")
        await settle(app, pilot)
        await pilot.press(*'say "hi"', "enter")
        await settle(app, pilot)
        assert app.status.history[-1].startswith("error: cannot use")
        assert app.screen is app.screen_stack[0]
