"""What goes wrong around the catalog and the command line is one line, and harmless.

Locked, full, size-limited, read-only, damaged, foreign and newer catalogs; missing
database drivers and passwords in URLs; unknown options, huge numbers, bytes that
are not UTF-8, closed pipes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator.cli import main
from tests.corpus import write_good

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(db, *args, ok=True, **kw):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)], **kw)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def one_line_error(result, *parts: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    text = result.output
    assert text.count("\n") == 1 and text.startswith("error: "), text
    assert "Traceback" not in text and "Background on this error" not in text
    for part in parts:
        assert part in text, text
    return text


def curator(*args: str | bytes, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "curator.cli", *args],
        env=ENV,
        capture_output=True,
        timeout=120,
        **kw,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def scanned(tmp_path):
    db = tmp_path / "c.db"
    write_good(tmp_path / "imgs")
    run(db, "scan", tmp_path / "imgs", "--quiet")
    return db


# --- errors after the catalog opens -----------------------------------------------------


def test_a_lock_held_by_another_program_is_one_line(scanned, monkeypatch):
    monkeypatch.setattr("db.engine.BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(scanned, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(scanned, "tags", "add", "", "cat", ok=False)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_line_error(result, "is locked by another program", "waited 0.3 s", "nothing was changed")
    assert json.loads(run(scanned, "history", "--json").output) == []


def test_a_read_only_catalog_is_one_line(scanned):
    url = f"sqlite:///file:{scanned}?mode=ro&uri=true"
    before = digest(scanned)
    assert run(url, "ls", "--json").output  # reading works
    result = run(url, "tags", "add", "", "cat", ok=False)
    one_line_error(result, f"the catalog {scanned} is read-only", "writable")
    assert digest(scanned) == before


def test_a_read_only_catalog_outside_wal_mode_can_still_be_read(scanned):
    conn = sqlite3.connect(scanned)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    url = f"sqlite:///file:{scanned}?mode=ro&uri=true"
    assert json.loads(run(url, "stats", "--json").output)["images"] > 0
    one_line_error(run(url, "accept", "", ok=False), "is read-only")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limits")
def test_a_file_size_limit_is_one_line_and_the_catalog_stays_whole(scanned):
    import resource

    size = scanned.stat().st_size
    open_catalog_first = curator("--db", str(scanned), "stats")
    assert open_catalog_first.returncode == 0
    limit = size + 8192

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    tags = [f"tag{i}_{'x' * 40}" for i in range(4000)]
    result = curator("--db", str(scanned), "tags", "add", "", *tags, preexec_fn=cap)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.count("\n") == 1 and "file size limit" in err and "ulimit -f" in err, err
    assert integrity(scanned) == "ok"
    assert json.loads(run(scanned, "history", "--json").output) == []


def test_a_damaged_catalog_is_one_line(scanned):
    conn = sqlite3.connect(scanned)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(scanned.read_bytes())
    for offset in range(4096 * 2, len(data), 4096):
        data[offset : offset + 512] = b"\xde\xad\xbe\xef" * 128
    scanned.write_bytes(bytes(data))
    for args in (["stats"], ["tags", "add", "", "cat"], ["ls"]):
        one_line_error(run(scanned, *args, ok=False), "is damaged", ".recover")


# --- opening ----------------------------------------------------------------------------


def test_another_programs_sqlite_file_is_refused_unchanged(tmp_path):
    other = tmp_path / "notes.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.commit()
    conn.close()
    before = digest(other)
    result = run(other, "stats", ok=False)
    one_line_error(result, "another program's SQLite database", "notes", "nothing was changed")
    assert digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal, no -shm
    conn = sqlite3.connect(other)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path):
    other = tmp_path / "photo.db"
    other.write_bytes(os.urandom(5000))
    before = digest(other)
    one_line_error(run(other, "stats", ok=False), "is not a SQLite database")
    assert digest(other) == before


def test_an_empty_file_and_an_empty_sqlite_database_become_catalogs(tmp_path):
    (tmp_path / "empty.db").touch()
    sqlite3.connect(tmp_path / "blank.db").close()
    for name in ("empty.db", "blank.db"):
        assert "the catalog is empty" in run(tmp_path / name, "stats").output


def test_a_catalog_from_a_newer_curator_is_one_line_without_a_backup(scanned):
    conn = sqlite3.connect(scanned)
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()
    before = digest(scanned)
    result = run(scanned, "stats", ok=False)
    one_line_error(result, "made by a newer Curator", "9999_future", "upgrade")
    assert digest(scanned) == before
    assert not list(scanned.parent.glob("*.bak-*"))


def test_a_missing_database_driver_names_the_package_and_hides_the_password(tmp_path):
    # A fresh interpreter where neither PostgreSQL driver can be imported.
    code = (
        "import sys; sys.modules['psycopg'] = sys.modules['psycopg2'] = None; "
        "from curator.cli import main; main()"
    )
    url = "postgresql://alice:s3cret-pw@db.example:5432/cat"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code, "--db", url, "stats"],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.startswith("error: ") and len(output.strip().splitlines()) == 1, output
    assert 'pip install "psycopg[binary]"' in output and "alice:***@db.example" in output
    assert "s3cret-pw" not in output


def test_catalog_open_errors_hide_passwords_and_sqlalchemy_links():
    result = run("nosuchdialect://bob:pa55word@host/db", "stats", ok=False)
    one_line_error(result, "bob:***@host")
    assert "pa55word" not in result.output


def test_redact_hides_any_password_in_a_url():
    from db.errors import redact

    url = "x postgresql+psycopg://u:p@ss:w@h:1/d y"
    assert redact(url) == "x postgresql+psycopg://u:***@h:1/d y"
    assert redact("sqlite:////tmp/c.db") == "sqlite:////tmp/c.db"


# --- the command line -----------------------------------------------------------------


def test_unknown_options_are_errors_and_negated_terms_need_a_first_word(scanned):
    for args in (["--limt", "5"], ["-q"], ["--bogus=1", "cat"], ["format:png", "--nope"]):
        result = run(scanned, "ls", *args, ok=False)
        assert result.exit_code == 2 and "No such option" in result.output, args
    assert "needs `--` first" in run(scanned, "ls", "-q", ok=False).output
    everything = run(scanned, "ls").output.splitlines()
    not_png = run(scanned, "ls", "--", "-format:png").output.splitlines()
    assert not_png and set(not_png) < set(everything)
    assert run(scanned, "ls", "-format:png", ok=False).exit_code == 2  # first: `--` needed
    both = run(scanned, "ls", "width>=1", "-format:png", "--limit", "100").output.splitlines()
    assert sorted(both) == sorted(not_png)


def test_ls_null_and_escaped_names(tmp_path):
    from PIL import Image

    db = tmp_path / "c.db"
    root = tmp_path / "imgs"
    root.mkdir()
    odd = ["two\nlines.png", "tab\there.png", "bell\x07.png", "plain.png"]
    for i, name in enumerate(odd):
        Image.new("RGB", (8 + i, 8), (i * 40, 0, 0)).save(root / name)
    run(db, "scan", root, "--quiet")
    lines = run(db, "ls").output.splitlines()
    assert len(lines) == len(odd)
    assert {line.rsplit("/", 1)[1] for line in lines} == {
        "two\\nlines.png",
        "tab\\there.png",
        "bell\\x07.png",
        "plain.png",
    }
    exact = run(db, "ls", "-0").output.split("\0")
    assert exact[-1] == "" and {p.rsplit("/", 1)[1] for p in exact[:-1]} == set(odd)
    assert run(db, "ls", "--null").output == run(db, "ls", "-0").output


def test_ls_into_a_closed_pipe_ends_quietly(scanned):
    proc = subprocess.Popen(
        [sys.executable, "-m", "curator.cli", "--db", str(scanned), "ls"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


def test_ls_pipe_through_head_in_a_shell(scanned, tmp_path):
    # Many rows so the writer is still writing when head exits.
    conn = sqlite3.connect(scanned)
    image = conn.execute("SELECT id FROM images LIMIT 1").fetchone()[0]
    conn.executemany(
        "INSERT INTO files (path, folder, image_id, size, mtime_ns, present, first_seen,"
        " last_seen) VALUES (?, '/x', ?, 1, 1, 1, '2026-01-01', '2026-01-01')",
        [(f"/x/{i:06d}.png", image) for i in range(20000)],
    )
    conn.commit()
    conn.close()
    script = f'"{sys.executable}" -m curator.cli --db "{scanned}" ls | head -1'
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], env=ENV, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"" and result.stdout.count(b"\n") == 1


def test_arguments_that_are_not_utf8_are_one_line(scanned):
    result = curator("--db", str(scanned), "ls", b"caf\xe9")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1
    assert err.startswith("error: the argument") and "not valid UTF-8" in err


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--limit", str(2**70)],
        ["ls", "--limit", "5", "--after", str(2**64)],
        ["runs", "--limit", str(2**70)],
        ["history", "--limit", str(2**63)],
        ["undo", str(2**70)],
        ["undo", "--edit", str(2**64)],
        ["redo", "--edit", str(2**64)],
    ],
)
def test_numbers_past_64_bits_are_one_line(scanned, args):
    result = run(scanned, *args, ok=False)
    assert result.exit_code == 2 and "not in the range" in result.output
    assert "Traceback" not in result.output


def test_tags_show_takes_a_huge_id_or_a_short_prefix(scanned):
    listed = json.loads(run(scanned, "ls", "--json").output)
    one_line_error(
        run(scanned, "tags", "show", str(2**70), ok=False), "no catalogued image", code=2
    )
    sha = listed[0]["sha256"]
    by_prefix = json.loads(run(scanned, "tags", "show", sha[:4], "--json").output)
    assert by_prefix["sha256"] == sha
    result = run(scanned, "tags", "show", sha[:3], ok=False)
    one_line_error(result, "prefix of 4+", code=2)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("database or disk is full", "is full: free some space"),
        ("database is locked", "locked by another program"),
        ("attempt to write a readonly database", "is read-only"),
        ("file is not a database", "is damaged"),
        ("database disk image is malformed", "is damaged"),
        ("unable to open database file", "cannot open"),
    ],
)
def test_each_sqlite_failure_reads_as_one_line(raw, says):
    from sqlalchemy.exc import OperationalError

    from db.errors import database_error_message

    exc = OperationalError("INSERT INTO images ...", {"p": 1}, sqlite3.OperationalError(raw))
    message = database_error_message(exc, "the catalog /x/c.db")
    assert says in message and "\n" not in message and "INSERT" not in message
    assert database_error_message(ValueError("no"), "x") is None
