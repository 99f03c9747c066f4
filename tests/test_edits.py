"""Tag edits, curation rules, history and undo: library and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from curator.cli import main
from curator.curation import edits, review
from curator.errors import UsageError
from curator.tags import rules as tagrules
from curator.tags.rules import TagRules, contains, normalize_tag, overlapped, trigger_words
from curator.tags.store import replace_source_tags
from curator.tags.view import IMPLIED, USER, USER_REMOVED, effective_tags
from db.schema import File, Image, ImageTag, Run, Tag, TagRule

MODEL = "model:wd"
MODEL_TAGS = {
    1: [
        ("long_hair", "general", 0.9),
        ("hair", "general", 0.6),
        ("white_shirt", "general", 0.8),
        ("shirt", "general", 0.5),
        ("1girl", "general", 0.99),
        ("general", "rating", 0.7),
    ],
    2: [("hair_ornament", "general", 0.7), ("hair", "general", 0.5), ("smile", "general", 0.4)],
    3: [("smile", "general", 0.95)],
}


def seed(catalog, root: Path) -> dict[str, Path]:
    """Four images: 1 and 2 in folder a/, 3 and 4 in b/, tagged by a model, a sidecar, a user."""
    folders = {"a": root / "a", "b": root / "b"}
    with catalog.write() as s:
        run = Run(kind="tag", model="wd", revision="r1")
        s.add(run)
        s.flush()
        for i in range(1, 5):
            folder = folders["a" if i <= 2 else "b"]
            s.add(
                Image(
                    id=i,
                    sha256=f"{i:064x}",
                    bytes=100,
                    width=64 * i,
                    height=64,
                    format="PNG",
                    mode="RGB",
                )
            )
            s.flush()
            s.add(
                File(
                    path=str(folder / f"{i}.png"),
                    folder=str(folder),
                    image_id=i,
                    size=1,
                    mtime_ns=1,
                )
            )
        for image_id, tags in MODEL_TAGS.items():
            replace_source_tags(s, image_id, MODEL, tags, run_id=run.id)
        replace_source_tags(s, 3, "sidecar", [("blue_sky", "general", None)])
        replace_source_tags(s, 2, USER, [("favorite", "general", None)])
    return folders


def rerun_model(catalog) -> None:
    """What a model re-run does: replace its own rows, nothing else."""
    with catalog.write() as s:
        for image_id, tags in MODEL_TAGS.items():
            replace_source_tags(s, image_id, MODEL, tags, run_id=1)


def snapshot(catalog):
    with catalog.session() as s:
        tags = sorted(
            s.execute(
                select(
                    ImageTag.image_id, Tag.name, ImageTag.source, ImageTag.score, ImageTag.run_id
                ).join(Tag, Tag.id == ImageTag.tag_id)
            ).all()
        )
        rules = sorted(s.execute(select(TagRule.kind, TagRule.tag, TagRule.target)).all())
        images = sorted(s.execute(select(Image.id, Image.status, Image.duplicate_of)).all())
    return tags, rules, images


def names(catalog, image_id: int, **kw) -> list[str]:
    with catalog.session() as s:
        return sorted(t.name for t in effective_tags(s, [image_id], **kw)[image_id])


def rows(catalog, image_id: int, tag: str) -> dict[str, float | None]:
    with catalog.session() as s:
        return dict(
            s.execute(
                select(ImageTag.source, ImageTag.score)
                .join(Tag, Tag.id == ImageTag.tag_id)
                .where(ImageTag.image_id == image_id, Tag.name == tag)
            ).all()
        )


@pytest.fixture
def folders(catalog, tmp_path):
    return seed(catalog, tmp_path)


# --- every operation is undone exactly -------------------------------------------------

OPERATIONS = {
    "add": lambda c, f: edits.add_tags(c, f"folder:{f['a']}", ["cat", "smile", "long hair"]),
    "remove": lambda c, f: edits.remove_tags(c, "", ["hair", "favorite", "blue_sky"]),
    "rename": lambda c, f: edits.rename_tag(c, "smile", "grin"),
    "rename_merge": lambda c, f: edits.rename_tag(c, "hair", "long_hair"),
    "replace": lambda c, f: edits.replace_tags(c, f"folder:{f['a']}", "hair", "short_hair"),
    "alias": lambda c, f: tagrules.add_alias(c, "hair", "hairstyle"),
    "imply": lambda c, f: tagrules.add_implication(c, "smile", "happy"),
    "prune": lambda c, f: tagrules.prune_tags(c, ""),
    "blacklist": lambda c, f: tagrules.blacklist_add(c, ["1girl", "smile"]),
    "trigger": lambda c, f: tagrules.trigger_add(c, ["sks", "ohwx"]),
    "accept": lambda c, f: review.accept(c, f"folder:{f['b']}"),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_undo_restores_the_exact_previous_state(catalog, folders, op):
    tagrules.blacklist_add(catalog, ["watermark"])
    edits.remove_tags(catalog, "", ["white_shirt"])  # a user-removed row to carry through
    before = snapshot(catalog)
    result = OPERATIONS[op](catalog, folders)
    assert result.edit_id is not None
    assert snapshot(catalog) != before
    [undone] = edits.undo(catalog)
    assert undone["id"] == result.edit_id and undone["undone"]
    assert snapshot(catalog) == before


def test_undo_n_goes_back_in_reverse_order_and_never_twice(catalog, folders):
    start = snapshot(catalog)
    edits.add_tags(catalog, "", ["cat"])
    middle = snapshot(catalog)
    edits.rename_tag(catalog, "cat", "dog")
    edits.remove_tags(catalog, "", ["dog", "smile"])
    tagrules.add_alias(catalog, "hair", "hairstyle")
    assert [e["op"] for e in edits.history(catalog)] == [
        "tags.alias",
        "tags.remove",
        "tags.rename",
        "tags.add",
    ]
    assert len(edits.undo(catalog, 3)) == 3
    assert snapshot(catalog) == middle
    assert [e["undone"] for e in edits.history(catalog)] == [True, True, True, False]
    assert [e["op"] for e in edits.undo(catalog, 5)] == ["tags.add"]
    assert snapshot(catalog) == start
    assert edits.undo(catalog) == []


def test_undo_after_a_model_rerun_restores_the_edit_time_rows(catalog, folders):
    edits.rename_tag(catalog, "smile", "grin")
    rerun_model(catalog)  # the model writes `smile` again beside the renamed rows
    assert rows(catalog, 3, "smile") == {MODEL: 0.95}
    edits.undo(catalog)
    assert rows(catalog, 3, "smile") == {MODEL: 0.95}
    assert rows(catalog, 3, "grin") == {}


def test_an_edit_that_changes_nothing_is_not_recorded(catalog, folders):
    edits.add_tags(catalog, "", ["cat"])
    again = edits.add_tags(catalog, "", ["cat"])
    assert again.edit_id is None and again.images == 0
    assert len(edits.history(catalog)) == 1


# --- sources: a person's word wins -----------------------------------------------------


def test_removing_a_model_tag_survives_a_model_rerun(catalog, folders):
    result = edits.remove_tags(catalog, f"folder:{folders['a']}", ["hair"])
    assert result.images == 2
    assert rows(catalog, 1, "hair") == {MODEL: 0.6, USER_REMOVED: None}
    rerun_model(catalog)
    assert "hair" not in names(catalog, 1) and "hair" not in names(catalog, 2)
    # Adding it back by hand lifts the removal.
    edits.add_tags(catalog, f"folder:{folders['a']}", ["hair"])
    assert rows(catalog, 1, "hair") == {MODEL: 0.6, USER: None}
    assert "hair" in names(catalog, 1)


def test_removing_a_user_tag_deletes_the_row(catalog, folders):
    edits.remove_tags(catalog, "", ["favorite"])
    assert rows(catalog, 2, "favorite") == {}
    assert "favorite" not in names(catalog, 2)


def test_user_tags_survive_a_model_rerun(catalog, folders):
    edits.add_tags(catalog, "", ["cat"])
    rerun_model(catalog)
    assert all("cat" in names(catalog, i) for i in range(1, 5))


def test_removing_a_tag_set_by_user_and_model_hides_it(catalog, folders):
    edits.add_tags(catalog, "", ["smile"])
    edits.remove_tags(catalog, "", ["smile"])
    assert rows(catalog, 3, "smile") == {MODEL: 0.95, USER_REMOVED: None}
    assert rows(catalog, 4, "smile") == {}  # only the user had it: nothing left to hide


def test_tags_are_normalised_to_booru_spelling(catalog, folders):
    edits.add_tags(catalog, "", ["  sitting   cat "])
    assert "sitting_cat" in names(catalog, 4)
    assert normalize_tag("long hair") == "long_hair"
    with pytest.raises(UsageError):
        edits.add_tags(catalog, "", ["  "])


def test_replace_only_touches_selected_images_that_have_the_tag(catalog, folders):
    result = edits.replace_tags(catalog, f"folder:{folders['a']}", "smile", "grin")
    assert result.images == 1  # image 2; image 1 has no smile, image 3 is not selected
    assert "grin" in names(catalog, 2) and "smile" not in names(catalog, 2)
    assert "grin" not in names(catalog, 1)
    assert "smile" in names(catalog, 3)
    rerun_model(catalog)
    assert "smile" not in names(catalog, 2)


def test_rename_keeps_sources_scores_and_runs_and_merges(catalog, folders):
    edits.rename_tag(catalog, "hair", "long_hair")
    assert rows(catalog, 1, "long_hair") == {MODEL: 0.9}  # the existing row wins
    assert rows(catalog, 2, "long_hair") == {MODEL: 0.5}
    assert rows(catalog, 1, "hair") == {} and rows(catalog, 2, "hair") == {}
    with catalog.session() as s:
        run_ids = set(s.scalars(select(ImageTag.run_id).where(ImageTag.source == MODEL)))
    assert run_ids == {1}
    with pytest.raises(UsageError):
        edits.rename_tag(catalog, "smile", "smile")


# --- rules -----------------------------------------------------------------------------


def test_alias_rewrites_rows_and_applies_on_add_and_read(catalog, folders):
    tagrules.add_alias(catalog, "smiling", "smile")
    edits.add_tags(catalog, "", ["smiling"])
    assert rows(catalog, 4, "smile") == {USER: None} and rows(catalog, 4, "smiling") == {}

    tagrules.add_alias(catalog, "hair", "hairstyle")
    assert rows(catalog, 1, "hairstyle") == {MODEL: 0.6} and rows(catalog, 1, "hair") == {}
    rerun_model(catalog)  # the model still writes `hair`: it reads as `hairstyle`
    assert rows(catalog, 1, "hair") == {MODEL: 0.6}
    assert "hairstyle" in names(catalog, 1) and "hair" not in names(catalog, 1)
    assert "hair" in names(catalog, 1, apply_rules=False)
    # Removing the canonical tag hides every spelling of it.
    edits.remove_tags(catalog, f"folder:{folders['a']}", ["hair"])
    assert "hairstyle" not in names(catalog, 1)
    rerun_model(catalog)
    assert "hairstyle" not in names(catalog, 2)


def test_alias_chains_and_rule_rewrites(catalog, folders):
    tagrules.add_alias(catalog, "grin", "smile")
    tagrules.add_implication(catalog, "smile", "happy")
    tagrules.blacklist_add(catalog, ["smile"])
    tagrules.add_alias(catalog, "smile", "smiling")  # smile is now itself a spelling
    with catalog.session() as s:
        rules = TagRules.load(s)
    assert rules.canonical("grin") == "smiling" and rules.canonical("smile") == "smiling"
    assert rules.implied_by("grin") == {"happy"} and "smiling" in rules.blacklist
    with pytest.raises(UsageError, match="alias"):
        tagrules.add_alias(catalog, "smiling", "grin")
    tagrules.remove_alias(catalog, "grin")
    with catalog.session() as s:
        assert TagRules.load(s).canonical("grin") == "grin"


def test_implications_are_computed_and_follow_chains(catalog, folders):
    tagrules.add_implication(catalog, "long_hair", "hair")
    tagrules.add_implication(catalog, "white_shirt", "shirt")
    tagrules.add_implication(catalog, "shirt", "clothes")
    edits.add_tags(catalog, "", ["white_shirt"])
    with catalog.session() as s:
        view = effective_tags(s, [1, 4], implied=True)
    four = {t.name: t for t in view[4]}
    assert set(four) == {"white_shirt", "shirt", "clothes"}
    assert four["clothes"].sources == (IMPLIED,) and four["clothes"].score == 1.0
    assert "clothes" in {t.name for t in view[1]}
    assert "clothes" not in names(catalog, 4)  # only when asked for
    with pytest.raises(UsageError, match="cycle"):
        tagrules.add_implication(catalog, "clothes", "white_shirt")
    # Removing an implied tag hides it, even though no row gives it.
    edits.remove_tags(catalog, "", ["clothes"])
    assert "clothes" not in names(catalog, 4, implied=True)
    tagrules.remove_implication(catalog, "shirt", "clothes")
    with pytest.raises(UsageError):
        tagrules.remove_implication(catalog, "shirt", "clothes")


def test_blacklist_hides_tags_and_refuses_them(catalog, folders):
    tagrules.blacklist_add(catalog, ["smile", "blue sky"])
    assert "smile" not in names(catalog, 3) and "blue_sky" not in names(catalog, 3)
    with pytest.raises(UsageError, match="blacklisted"):
        edits.add_tags(catalog, "", ["smile"])
    assert [r["tag"] for r in tagrules.list_rules(catalog, "blacklist")] == ["smile", "blue_sky"]
    tagrules.blacklist_remove(catalog, ["smile"])
    assert "smile" in names(catalog, 3) and "blue_sky" not in names(catalog, 3)


def test_trigger_words_keep_their_order(catalog, folders):
    tagrules.trigger_add(catalog, ["sks", "ohwx", "sks"])
    tagrules.trigger_add(catalog, ["zkz"])
    tagrules.trigger_remove(catalog, ["ohwx"])
    with catalog.session() as s:
        assert trigger_words(s) == ["sks", "zkz"]


def test_prune_drops_general_tags_a_specific_tag_contains(catalog, folders):
    edits.add_tags(catalog, f"folder:{folders['b']}", ["very long hair", "long hair"])
    result = tagrules.prune_tags(catalog, "")
    assert names(catalog, 1) == ["1girl", "general", "long_hair", "white_shirt"]
    assert "hair" in names(catalog, 2)  # hair_ornament is an ornament, not hair
    assert "long_hair" not in names(catalog, 3) and "very_long_hair" in names(catalog, 3)
    assert result.images == 3
    rerun_model(catalog)
    assert "hair" not in names(catalog, 1)
    tagrules.prune_tags(catalog, f"folder:{folders['a']}", subset=True)
    assert "hair" not in names(catalog, 2)


def test_overlap_rules():
    assert contains("long_hair", "hair") and contains("very_long_hair", "long_hair")
    assert not contains("hair_ornament", "hair") and contains("hair_ornament", "hair", subset=True)
    assert not contains("hair", "hair") and not contains("hair", "long_hair")
    assert not contains("ponytail", "tail")
    assert overlapped(["shirt", "white_shirt", "hair", "long_hair", "smile"]) == {
        "shirt": "white_shirt",
        "hair": "long_hair",
    }


# --- CLI -------------------------------------------------------------------------------


def cli(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_tag_edits_history_and_undo(catalog, folders, db_path):
    before = snapshot(catalog)
    query = f"folder:{folders['a']} width>=100"
    out = json.loads(cli(db_path, "tags", "add", query, "cat", "sitting cat", "--json").output)
    assert out["images"] == 1 and out["added"] == 2
    assert {"cat", "sitting_cat"} <= set(names(catalog, 2)) and "cat" not in names(catalog, 1)
    cli(db_path, "tags", "remove", "", "smile")
    assert "smile" not in names(catalog, 3)
    cli(db_path, "tags", "alias", "kitty", "cat")
    cli(db_path, "tags", "imply", "cat", "animal")
    cli(db_path, "tags", "blacklist", "add", "1girl")
    cli(db_path, "tags", "trigger", "add", "sks")
    assert json.loads(cli(db_path, "tags", "trigger", "list", "--json").output) == ["sks"]
    assert "1girl" in cli(db_path, "tags", "blacklist", "list").output
    rules = json.loads(cli(db_path, "tags", "rules", "--json").output)
    assert {"kind": "alias", "tag": "kitty", "target": "cat"} in rules
    cli(db_path, "tags", "rename", "smile", "grin")
    cli(db_path, "tags", "replace", f"folder:{folders['b']}", "blue_sky", "sky")
    assert "sky" in names(catalog, 3)
    cli(db_path, "tags", "prune")
    assert "hair" not in names(catalog, 1)

    history = json.loads(cli(db_path, "history", "--json", "--limit", "3").output)
    assert [h["op"] for h in history] == ["tags.prune", "tags.replace", "tags.rename"]
    assert "tags.add" in cli(db_path, "history").output
    out = cli(db_path, "undo", "20").output
    assert out.count("undid edit") == 9
    assert snapshot(catalog) == before
    assert "nothing to undo" in cli(db_path, "undo").output


def test_cli_asks_for_a_quoted_query(catalog, folders, db_path):
    before = snapshot(catalog)
    result = cli(db_path, "tags", "add", f"folder:{folders['a']}", "width>=100", "cat", ok=False)
    assert result.exit_code == 2
    assert "quote the whole QUERY" in result.output
    assert snapshot(catalog) == before and edits.history(catalog) == []
    result = cli(db_path, "tags", "add", "bogus:x", "cat", ok=False)
    assert result.exit_code != 0 and result.output.startswith("error:")


def test_cli_help_for_every_curation_command():
    runner = CliRunner()
    main.load_all()
    groups = [["tags"], ["tags", "blacklist"], ["tags", "trigger"]]
    for path in groups:
        group = main
        for name in path:
            group = group.commands[name]
        for name in group.commands:
            result = runner.invoke(main, [*path, name, "--help"])
            assert result.exit_code == 0 and "Usage:" in result.output, (path, name)
    add_help = runner.invoke(main, ["tags", "add", "--help"]).output
    assert "ONE argument" in add_help and "folder:cats/" in add_help
