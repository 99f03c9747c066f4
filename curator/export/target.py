"""The export folder: refuse, replace or move aside a target; swap the new export in."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from curator.errors import ExportError
from curator.export.options import GENERATOR, MANIFEST_NAME


def _manifest_files(folder: Path) -> set[str] | None:
    """The files a Curator manifest in ``folder`` lists, or None if it has none of ours."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        return None
    files = data.get("files")
    return set(files) if isinstance(files, dict) else None


def _unexpected_file(folder: Path, listed: set[str]) -> str | None:
    """The first file under ``folder`` that is neither listed nor the manifest itself."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            relative = Path(dirpath, name).relative_to(folder).as_posix()
            if relative != MANIFEST_NAME and relative not in listed:
                return relative
    return None


def inspect_target(target: Path, force: bool, overwrite: bool) -> str:
    """``new``, ``empty``, ``previous`` (replace) or ``foreign`` (move aside); else refuse."""
    if target.parent == target:
        raise ExportError(f"cannot export into {target}: give a folder to create or replace")
    if target.is_symlink():
        raise ExportError(f"export target {target} is a symbolic link; give the real folder")
    if not target.exists():
        return "new"
    if not target.is_dir():
        raise ExportError(f"export target {target} exists and is not a folder")
    if not any(target.iterdir()):
        return "empty"
    if not (force or overwrite):
        raise ExportError(f"export target {target} is not empty; use --force to replace it")
    listed = _manifest_files(target)
    extra = _unexpected_file(target, listed) if listed is not None else None
    if listed is not None and extra is None:
        return "previous"
    if overwrite:
        return "foreign"
    why = (
        f"has a file Curator did not write ({extra})"
        if listed is not None
        else "is not a Curator export"
    )
    raise ExportError(
        f"export target {target} {why}; use --force twice to move it aside and export anyway"
    )


def make_temp(target: Path) -> Path:
    """A new hidden folder beside ``target`` (same file system, so the final move is a rename).

    An export killed outright leaves it behind; it is safe to delete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.curator-tmp")
        try:
            temp.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0o700
            return temp
        except FileExistsError:
            continue


def _aside_name(target: Path) -> Path:
    n = 1
    while (aside := target.with_name(f"{target.name}.old-{n}")).exists() or aside.is_symlink():
        n += 1
    return aside


def commit(temp: Path, target: Path, state: str) -> str | None:
    """Move the finished export into place; returns where a foreign folder was moved."""
    if state in ("new", "empty"):
        if state == "empty":
            target.rmdir()
        os.rename(temp, target)
        return None
    old = _aside_name(target) if state == "foreign" else target.with_name(temp.name + "-old")
    os.rename(target, old)
    try:
        os.rename(temp, target)
    except OSError:
        os.rename(old, target)
        raise
    if state == "previous":
        shutil.rmtree(old, ignore_errors=True)
        return None
    return str(old)
