"""The `curator` command as a user runs it."""

from __future__ import annotations

import json

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
