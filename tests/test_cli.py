"""The `curator` command as a user runs it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from curator.cli import main
from tests.corpus import write_bad, write_good


def run(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_scan_stats_ls_problems(tmp_path):
    db = tmp_path / "c.db"
    root = tmp_path / "imgs"
    good = write_good(root)
    bad = write_bad(root / "bad")
    out = run(db, "scan", root, "--workers", "2", "--quiet").output
    assert f"{len(good)} new images" in out and f"{len(bad)} problems" in out

    summary = json.loads(run(db, "scan", root, "--json").output)
    assert summary["unchanged"] == len(good) and summary["new_images"] == 0

    stats = json.loads(run(db, "stats", "--json").output)
    assert stats["images"] == len(good) and stats["files_present"] == len(good)
    assert stats["formats"]["PNG"] >= 5 and sum(stats["problems"].values()) == len(bad)
    assert sum(stats["aspect"].values()) == len(good)
    assert stats["runs"]["scan"] == 2

    listed = run(db, "ls", f"folder:{root / 'sub'}", "format:png").output.split()
    assert sorted(p.rsplit("/", 1)[1] for p in listed) == [
        "a1111.png",
        "a1111_itxt.png",
        "captioned.png",
        "novelai.png",
    ]
    wide = json.loads(run(db, "ls", "width>=100", "--json").output)
    assert [r["path"].rsplit("/", 1)[1] for r in wide] == ["wide.webp"]

    problems = json.loads(run(db, "problems", "--json").output)
    assert {p["kind"] for p in problems} == set(bad.values())
    assert (
        run(db, "problems", "--kind", "empty")
        .output.strip()
        .endswith("empty: file is empty (0 bytes)")
    )


def test_errors_are_one_line(tmp_path):
    db = tmp_path / "c.db"
    result = run(db, "ls", "bogus:thing", ok=False)
    assert result.exit_code != 0
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: unknown") and "'bogus" in line
    assert line.endswith("(at column 1)")
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "no/such/c.db"), "stats"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("error: cannot create catalog")


def test_every_command_has_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    main.load_all()
    for name in main.commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, name


def test_db_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATOR_DB", str(tmp_path / "env.db"))
    write_good(tmp_path / "imgs")
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "imgs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


def test_ls_pages_by_image_id(tmp_path):
    db = tmp_path / "c.db"
    good = write_good(tmp_path / "imgs")
    run(db, "scan", tmp_path / "imgs", "--quiet")
    everything = json.loads(run(db, "ls", "format:png", "--json").output)
    seen, after = [], 0
    while True:
        page = json.loads(
            run(db, "ls", "format:png", "--limit", 3, "--after", after, "--json").output
        )
        if not page:
            break
        assert len({r["id"] for r in page}) <= 3
        seen += page
        after = max(r["id"] for r in page)
    assert sorted(r["path"] for r in seen) == sorted(r["path"] for r in everything)
    assert len(everything) == sum(1 for name in good if name.endswith(".png"))


# --- the command table, help and output options -----------------------------------------


def walk(command, path=()):
    """Every (path, command) under `command`, groups included."""
    yield path, command
    for name in getattr(command, "commands", {}):
        yield from walk(command.commands[name], (*path, name))


def test_the_command_table_lists_every_command_with_its_own_summary():
    from curator.cli import COMMANDS

    main.load_all()
    assert set(main.commands) == set(COMMANDS)
    for name, command in main.commands.items():
        modules, summary = COMMANDS[name]
        defined = [m for m in modules if command in vars(importlib.import_module(m)).values()]
        assert defined, name
        assert summary == command.get_short_help_str(limit=1000), name


def test_help_lists_whole_summaries_and_loads_no_command_module():
    import os
    import subprocess
    import sys

    code = (
        "import sys; from curator.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('curator.cli.scan', 'curator.cli.export', 'PIL.Image', 'numpy',"
        " 'sqlalchemy.orm', 'alembic') if m in sys.modules]\n"
        "print('LOADED', heavy)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert "LOADED []" in out
    listing = out.split("Commands:")[1]
    assert "..." not in listing and "  prepare" in listing and "  redo" in listing
    for group in (["tags"], ["models"]):
        text = CliRunner().invoke(main, [*group, "--help"]).output
        assert "..." not in text.split("Commands:")[1]


# Commands whose options are documented elsewhere in this suite.
INTERACTIVE = {("review",)}  # a full-screen app prints nothing a script could read


def test_every_option_has_help_and_printing_commands_take_json():
    main.load_all()
    for path, command in walk(main):
        if isinstance(command, click.Group):
            continue
        names = {o for p in command.params for o in getattr(p, "opts", [])}
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, (path, param.opts)
        assert "--json" in names or path in INTERACTIVE, path
        # one option per spelling: click keeps only the last of two, silently
        spellings = [o for p in command.params for o in getattr(p, "opts", [])]
        assert len(spellings) == len(set(spellings)), (path, sorted(spellings))
        dests = [p.name for p in command.params]
        assert len(dests) == len(set(dests)), (path, sorted(dests))


def test_edits_take_quiet_and_json(tmp_path):
    db = tmp_path / "c.db"
    write_good(tmp_path / "imgs")
    run(db, "scan", tmp_path / "imgs", "--quiet")
    assert run(db, "tags", "add", "", "cat", "--quiet").output == ""
    assert run(db, "accept", "", "-q").output == ""
    assert run(db, "undo", "--quiet").output == ""
    assert json.loads(run(db, "redo", "--json").output)[0]["op"] == "review.accept"
    assert run(db, "undo", "--any-user").output.startswith("undid edit 2: accept")


def test_outputs_say_when_they_are_empty(tmp_path):
    db = tmp_path / "c.db"
    assert "the catalog is empty" in run(db, "stats").output
    assert run(db, "runs").output.strip() == "no runs yet"
    assert run(db, "history").output.strip() == "no edits"
    assert run(db, "tags", "top").output.strip() == "no tags"
    result = run(db, "ls", "format:png")
    assert result.stdout == "" and "no images in query 'format:png'" in result.stderr
    assert json.loads(run(db, "ls", "--json").output) == []


def test_runs_never_show_none_and_stats_aspects_are_query_shapes(tmp_path):
    from db import open_catalog
    from db.schema import Run

    db = tmp_path / "c.db"
    write_good(tmp_path / "imgs")
    run(db, "scan", tmp_path / "imgs", "--quiet")
    with open_catalog(str(db)) as catalog, catalog.write() as s:
        s.add(Run(kind="quality", model="quality", revision=None, status="finished"))
        s.add(Run(kind="tag", model="wd", revision="abc123", status="finished"))
    text = run(db, "runs").output
    assert "None" not in text and "#2 quality quality finished" in text
    assert "#3 tag wd@abc123 finished" in text
    runs = json.loads(run(db, "runs", "--json").output)
    assert [r["label"] for r in runs] == ["tag wd@abc123", "quality quality", "scan"]

    stats = json.loads(run(db, "stats", "--json").output)
    assert set(stats["aspect"]) == {"portrait", "square", "landscape"}
    for shape, count in stats["aspect"].items():
        assert len(json.loads(run(db, "ls", f"aspect:{shape}", "--json").output)) == count
    assert "aspect (query aspect:NAME)" in run(db, "stats").output


def test_tags_show_text_has_what_json_has(tmp_path):
    db = tmp_path / "c.db"
    good = write_good(tmp_path / "imgs")
    run(db, "scan", tmp_path / "imgs", "--quiet")
    path = good["sub/a1111.png"]
    report = json.loads(run(db, "tags", "show", path, "--json").output)
    text = run(db, "tags", "show", path).output
    gen = report["generation"]
    assert gen and gen["prompt"]
    for key, value in gen.items():
        if value not in (None, ""):
            assert f"{key}: {value}" in text, key
    for key in ("sha256", "status", "mode", "format"):
        assert str(report[key]) in text
    assert f"id {report['id']}" in text


def test_models_list_shows_imported_models(tmp_path, monkeypatch):
    models = tmp_path / "models"
    monkeypatch.setenv("CURATOR_MODELS", str(models))
    src = tmp_path / "dl"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"onnx")
    (src / "selected_tags.csv").write_text("tag_id,name,category,count\n0,cat,0,1\n")
    result = CliRunner().invoke(main, ["models", "import", str(src), "--name", "my-tagger"])
    assert result.exit_code == 0, result.output
    listed = json.loads(CliRunner().invoke(main, ["models", "list", "--json"]).output)
    mine = [m for m in listed["models"] if m["name"] == "my-tagger"]
    assert mine and mine[0]["available"] and mine[0]["kind"] == "wd14"
    text = CliRunner().invoke(main, ["models", "list"]).output
    assert "my-tagger" in text and "imported (model.onnx)" in text


def test_stats_uses_the_query_languages_square_bounds():
    from curator.catalog import stats
    from curator.query import terms as query

    assert (stats.SQUARE_LOW, stats.SQUARE_HIGH) == (query.SQUARE_LOW, query.SQUARE_HIGH)


def test_stats_counts_columns_the_schema_has():
    """`stats` names its few columns itself (it starts without the schema)."""
    from curator.catalog import stats
    from db.schema import Base

    for columns in (stats.IMAGES, stats.FILES, stats.PROBLEMS, stats.RUNS):
        for col in columns:
            assert col.name in Base.metadata.tables[col.table.name].c, col


def test_stats_starts_without_the_schema(tmp_path):
    """What makes `curator stats` start quickly: no mapped classes, no other dialects."""
    from db import open_catalog

    open_catalog(str(tmp_path / "c.db")).close()  # a new catalog's migrations need them
    code = (
        "import sys; from curator.cli import main; "
        f"sys.argv = ['curator', '--db', {str(tmp_path / 'c.db')!r}, 'stats', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('db.schema' in sys.modules, 'sqlalchemy.dialects.postgresql' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "False False"
