"""The export folder: refuse, replace or move aside a target; swap the new export in."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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
        raise ExportError(f"export target {target} is not empty; pass force=True to replace it")
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
        f"export target {target} {why}; pass overwrite=True to move it aside and export anyway"
    )


# A staging folder is ``.NAME.TOKEN.curator-tmp`` beside the target, held by an exclusive
# lock on ``.NAME.TOKEN.curator-lock`` for as long as its export runs: a kill releases
# the lock, so a later export can tell a stale folder from one still being written.
# A swap writes ``.NAME.curator-swap`` (what goes where) before its first rename and
# removes it after the last, so a swap cut short is finished by the next run.
_TMP = ".curator-tmp"
_LOCK = ".curator-lock"
_OLD = ".curator-old"
_SWAP = ".curator-swap"


def _hidden(target: Path, token: str, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{token}{suffix}")


def _journal(target: Path) -> Path:
    return target.with_name(f".{target.name}{_SWAP}")


def _try_lock(path: Path, create: bool) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
    except FileNotFoundError:
        return None
    if fcntl is None:
        return fd  # no advisory locks here: a staging folder is judged by age instead
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@dataclass(slots=True)
class Staging:
    """The hidden folder an export is written into, and the lock that says it is alive."""

    target: Path
    temp: Path
    token: str
    _fd: int | None = None

    def release(self) -> None:
        if self._fd is not None:
            _hidden(self.target, self.token, _LOCK).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Remove the staging folder (a finished target is never touched)."""
        shutil.rmtree(self.temp, ignore_errors=True)
        self.release()


def stage(target: Path) -> Staging:
    """A new, locked staging folder beside ``target`` (same file system: the move is a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        token = secrets.token_hex(4)
        lock = _hidden(target, token, _LOCK)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        temp = _hidden(target, token, _TMP)
        try:
            temp.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0o700
        except FileExistsError:
            os.close(fd)
            lock.unlink(missing_ok=True)
            continue
        return Staging(target, temp, token, fd)


def recover(target: Path) -> str | None:
    """Finish a swap that a killed export left half done, and remove stale staging folders.

    Returns what was done, for the caller to report, or None. A swap whose new export
    was already renamed into place is finished; one cut between its renames is finished
    too (the staged export was complete before the swap began); one that had not
    started is undone. Staging folders of exports that are no longer running go.
    """
    note = None
    journal = _journal(target)
    if journal.exists():
        try:
            plan = json.loads(journal.read_text(encoding="utf-8"))
            new, old = target.with_name(plan["new"]), target.with_name(plan["old"])
            keep_old = bool(plan["keep_old"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ExportError(
                f"cannot read {journal}: an earlier export of {target} was interrupted; "
                "check the folders beside it and delete that file"
            ) from None
        if not target.exists() and not target.is_symlink():
            if new.is_dir():
                os.rename(new, target)
                note = f"finished an interrupted replacement of {target}"
            elif old.is_dir():
                os.rename(old, target)
                note = f"restored {target} after an interrupted replacement"
        if not keep_old and old.is_dir() and target.exists():
            shutil.rmtree(old, ignore_errors=True)
        journal.unlink(missing_ok=True)
    prefix = f".{target.name}."
    try:
        siblings = list(target.parent.iterdir()) if target.parent.is_dir() else []
    except OSError:
        siblings = []
    for path in siblings:
        name = path.name
        if name.startswith(prefix) and name.endswith(_LOCK):
            token = name[len(prefix) : -len(_LOCK)]
            if not any(_hidden(target, token, s).exists() for s in (_TMP, _OLD)):
                if (fd := _try_lock(path, create=False)) is not None:
                    os.close(fd)  # an export that died before making its folder
                    path.unlink(missing_ok=True)
            continue
        if not name.startswith(prefix) or not name.endswith((_TMP, _OLD)):
            continue
        token = name[len(prefix) :].rsplit(".", 1)[0]
        lock = _hidden(target, token, _LOCK)
        fd = _try_lock(lock, create=False)
        if fd is None and lock.exists():
            continue  # a running export's
        if fd is not None:
            if fcntl is None and time.time() - path.stat().st_mtime < _STALE_WITHOUT_LOCKS:
                os.close(fd)
                continue
            os.close(fd)
            lock.unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
    return note


_STALE_WITHOUT_LOCKS = 24 * 3600.0


def _aside_name(target: Path) -> Path:
    n = 1
    while (aside := target.with_name(f"{target.name}.old-{n}")).exists() or aside.is_symlink():
        n += 1
    return aside


def commit(staging: Staging, state: str) -> str | None:
    """Move the finished export into place; returns where a foreign folder was moved.

    Replacing is two renames; the journal written first lets `recover` finish the
    swap if the process dies between them.
    """
    temp, target = staging.temp, staging.target
    if state in ("new", "empty"):
        try:
            os.rename(temp, target)  # POSIX renames over an empty folder in one step
        except OSError:
            if state != "empty":
                raise
            target.rmdir()
            os.rename(temp, target)
        staging.release()
        return None
    foreign = state == "foreign"
    old = _aside_name(target) if foreign else _hidden(target, staging.token, _OLD)
    journal = _journal(target)
    plan = {"new": temp.name, "old": old.name, "keep_old": foreign}
    with open(journal, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(plan))
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.rename(target, old)
        try:
            os.rename(temp, target)
        except OSError:
            os.rename(old, target)
            raise
    except OSError:
        journal.unlink(missing_ok=True)
        raise
    journal.unlink(missing_ok=True)
    staging.release()
    if not foreign:
        shutil.rmtree(old, ignore_errors=True)
        return None
    return str(old)
