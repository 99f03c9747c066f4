"""Who made each edit; undo of one's own edits, of a chosen edit, and redo."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from curator.cli import main
from curator.curation import edits, review
from curator.curation.changeset import Author
from curator.errors import UsageError
from curator.tags import rules as tagrules
from db.schema import Edit
from tests.test_edits import rows, seed, snapshot

ALICE = Author("alice", "host-a", 101)
BOB = Author("bob", "host-b", 202)


@pytest.fixture
def folders(catalog, tmp_path):
    return seed(catalog, tmp_path)


@pytest.fixture
def as_user(monkeypatch):
    """Make the edits that follow as `author`, as a second person on the catalog would."""

    def switch(author: Author) -> None:
        monkeypatch.setattr(Author, "current", classmethod(lambda cls: author))

    return switch


def test_each_edit_records_user_host_and_process(catalog, folders):
    edits.add_tags(catalog, "", ["cat"])
    [row] = edits.history(catalog)
    me = Author.current()
    assert (row["user"], row["host"], row["pid"]) == (me.user, me.host, me.pid)


def test_undo_takes_the_callers_newest_edit_not_another_users(catalog, folders, as_user):
    as_user(ALICE)
    bulk = edits.add_tags(catalog, "", ["cat"])
    as_user(BOB)
    mine = edits.add_tags(catalog, "folder:" + str(folders["b"]), ["dog"])
    as_user(ALICE)
    # Alice's undo reverts Alice's bulk edit, not Bob's newer one (other tags).
    [undone] = edits.undo(catalog)
    assert undone["id"] == bulk.edit_id
    after_bulk = snapshot(catalog)
    assert rows(catalog, 3, "dog") == {"user": None}  # Bob's edit stays
    assert rows(catalog, 1, "cat") == {}
    # Alice has nothing left to undo; --any-user takes Bob's.
    assert edits.undo(catalog) == []
    assert snapshot(catalog) == after_bulk
    [other] = edits.undo(catalog, any_user=True)
    assert other["id"] == mine.edit_id and other["user"] == "bob"


def test_undo_of_a_chosen_edit_when_nothing_later_depends_on_it(catalog, folders):
    first = edits.add_tags(catalog, "", ["cat"])
    second = review.accept(catalog, "")
    third = edits.add_tags(catalog, "", ["dog"])
    [undone] = edits.undo(catalog, edit_id=first.edit_id)
    assert undone["id"] == first.edit_id
    assert rows(catalog, 1, "cat") == {} and rows(catalog, 1, "dog") == {"user": None}
    states = {e["id"]: e["undone"] for e in edits.history(catalog)}
    assert states == {first.edit_id: True, second.edit_id: False, third.edit_id: False}


def test_undo_of_a_chosen_edit_names_the_later_edits_that_block_it(catalog, folders, as_user):
    as_user(ALICE)
    first = edits.add_tags(catalog, "", ["cat"])
    as_user(BOB)
    later = edits.rename_tag(catalog, "cat", "kitty")
    before = snapshot(catalog)
    with pytest.raises(UsageError) as info:
        edits.undo(catalog, edit_id=first.edit_id)
    message = str(info.value)
    assert f"cannot undo edit {first.edit_id}" in message
    assert f"{later.edit_id} (tags.rename by bob@host-b)" in message
    assert f"curator undo --edit {later.edit_id}" in message
    assert snapshot(catalog) == before  # refused having changed nothing
    # The caller's own undo is refused the same way, not silently skipped.
    as_user(ALICE)
    with pytest.raises(UsageError, match="cannot undo"):
        edits.undo(catalog)


def test_redo_applies_an_undone_edit_exactly_again(catalog, folders):
    tagrules.blacklist_add(catalog, ["watermark"])
    before = snapshot(catalog)
    edits.rename_tag(catalog, "hair", "long_hair")  # merges rows, keeps scores and runs
    done = snapshot(catalog)
    edits.undo(catalog)
    assert snapshot(catalog) == before
    [redone] = edits.redo(catalog)
    assert not redone["undone"]
    assert snapshot(catalog) == done
    assert edits.redo(catalog) == []
    edits.undo(catalog)
    assert snapshot(catalog) == before


def test_redo_goes_in_the_reverse_order_of_undo(catalog, folders):
    start = snapshot(catalog)
    edits.add_tags(catalog, "", ["cat"])
    one = snapshot(catalog)
    edits.rename_tag(catalog, "cat", "dog")
    two = snapshot(catalog)
    edits.undo(catalog, 2)
    assert snapshot(catalog) == start
    edits.redo(catalog)
    assert snapshot(catalog) == one
    edits.redo(catalog)
    assert snapshot(catalog) == two


def test_redo_is_refused_when_a_later_edit_changed_the_same_tags(catalog, folders):
    first = edits.add_tags(catalog, "", ["cat"])
    edits.undo(catalog)
    later = edits.add_tags(catalog, "", ["cat"])
    with pytest.raises(UsageError, match=f"cannot redo edit {first.edit_id}.*{later.edit_id}"):
        edits.redo(catalog, edit_id=first.edit_id)
    with pytest.raises(UsageError, match="is in effect"):
        edits.redo(catalog, edit_id=later.edit_id)
    with pytest.raises(UsageError, match="no edit 999"):
        edits.undo(catalog, edit_id=999)


def test_cli_undo_redo_and_history_by_user(catalog, folders, db_path, as_user):
    def cli(*args, ok=True):
        result = CliRunner().invoke(main, ["--db", str(db_path), *map(str, args)])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    as_user(ALICE)
    cli("tags", "add", "", "cat")
    as_user(BOB)
    cli("tags", "add", "", "dog")
    history = json.loads(cli("history", "--json").output)
    assert [(h["user"], h["host"]) for h in history] == [("bob", "host-b"), ("alice", "host-a")]
    assert "bob@host-b" in cli("history").output
    assert [h["user"] for h in json.loads(cli("history", "--mine", "--json").output)] == ["bob"]

    as_user(ALICE)
    assert "undid edit 1" in cli("undo").output
    assert "nothing to undo of yours" in cli("undo").output
    assert "redid edit 1" in cli("redo").output
    assert "undid edit 2" in cli("undo", "--any-user").output
    result = cli("undo", "--edit", 2, ok=False)
    assert result.exit_code == 2 and result.output.startswith("error: edit 2 is already undone")
    result = cli("undo", "--edit", 2**70, ok=False)
    assert result.exit_code == 2 and "not in the range" in result.output
    result = cli("history", "--limit", 2**64, ok=False)
    assert result.exit_code == 2 and "not in the range" in result.output
    with catalog.session() as s:
        assert s.scalars(select(Edit.undone).order_by(Edit.id)).all() == [False, True]


def test_a_persons_caption_is_an_edit_that_undo_and_redo_restore(catalog, tmp_path):
    from curator.curation.edits import redo, set_caption, undo
    from curator.ingest.scan import ScanOptions, scan
    from db.schema import Caption
    from tests.corpus import pattern

    (tmp_path / "imgs").mkdir()
    pattern(32, 32, 1).save(tmp_path / "imgs" / "a.png")
    scan(catalog, [str(tmp_path / "imgs")], ScanOptions(workers=0))

    def user_captions():
        with catalog.session() as s:
            return [c.text for c in s.query(Caption).filter_by(source="user")]

    assert set_caption(catalog, 1, "a red square").images == 1
    assert set_caption(catalog, 1, "a red square on grey").images == 1
    assert set_caption(catalog, 1, "a red square on grey").images == 0  # nothing changed
    assert user_captions() == ["a red square on grey"]
    undo(catalog)
    assert user_captions() == ["a red square"]
    undo(catalog)
    assert user_captions() == []
    redo(catalog)
    assert user_captions() == ["a red square"]
