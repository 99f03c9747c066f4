"""Walking folders for a scan: each folder once, and every way a walk can fail recorded.

A folder that cannot be listed, a symbolic link whose target is gone, a link that loops
(to itself, or back to a folder that contains it) each become a `ProbeProblem`, never a
silent skip: a user should learn why files were not catalogued.
"""

from __future__ import annotations

import errno
import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from curator.ingest.probe import ProbeProblem

IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .webp .gif .bmp .dib .tif .tiff .avif .heic".split()
)


@dataclass(slots=True)
class Listing:
    """One folder of a walk: its files, what went wrong there, and whether it was listed."""

    folder: str
    files: list[os.DirEntry[str]] = field(default_factory=list)
    problems: list[ProbeProblem] = field(default_factory=list)
    listed: bool = True


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def printable_path(path: str) -> str:
    """A path that can be stored and printed even when its bytes are not UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def excluded(path: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


def excluded_below(root: str, path: str, patterns: Sequence[str]) -> bool:
    """Whether the walk from ``root`` skips ``path`` (itself or a folder above it excluded)."""
    if not patterns:
        return False
    rel = os.path.relpath(path, root)
    if rel.startswith(os.pardir):
        return False
    current = root
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        if excluded(current, part, patterns):
            return True
    return False


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _link_problem(entry: os.DirEntry[str]) -> ProbeProblem | None:
    """A problem for a symbolic link that cannot be followed, or None if it can."""
    try:
        os.stat(entry.path)
        return None
    except OSError as exc:
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        path = printable_path(entry.path)
        if exc.errno == errno.ELOOP:
            return ProbeProblem(path, "symlink_loop", f"symbolic link loops ({target})")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if not is_image_name(entry.name) and os.path.splitext(entry.name)[1]:
                return None  # a dangling link to some other kind of file is not ours
            message = f"symbolic link to {printable_path(target)}, which does not exist"
            return ProbeProblem(path, "broken_symlink", message)
        return ProbeProblem(path, "unreadable", f"symbolic link to {target}: {_reason(exc)}")


def _contains(folder_real: str, target_real: str) -> bool:
    return folder_real == target_real or folder_real.startswith(target_real.rstrip(os.sep) + os.sep)


def walk(
    roots: Sequence[str], exclude: Sequence[str] = (), follow_symlinks: bool = True
) -> Iterator[Listing]:
    """Yield a `Listing` for every folder under ``roots``, each real folder once.

    Symlinked folders are followed (unless ``follow_symlinks`` is false) but each real
    folder is visited once, so a link back to a parent cannot loop; such a link is
    reported as ``symlink_loop``.
    """
    visited: set[tuple[int, int]] = set()
    stack = [os.path.abspath(r) for r in reversed(roots)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in visited:
                continue
            visited.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problem = ProbeProblem(
                printable_path(folder), "unreadable_folder", f"cannot list: {_reason(exc)}"
            )
            yield Listing(folder, problems=[problem], listed=False)
            continue
        listing = Listing(folder)
        subfolders: list[str] = []
        real_folder: str | None = None
        for entry in entries:
            if excluded(entry.path, entry.name, exclude):
                continue
            try:
                is_link = entry.is_symlink()
                if is_link and not follow_symlinks:
                    continue
                if entry.is_dir():
                    if is_link:
                        real_folder = real_folder or os.path.realpath(folder)
                        target = os.path.realpath(entry.path)
                        if _contains(real_folder, target):
                            listing.problems.append(
                                ProbeProblem(
                                    printable_path(entry.path),
                                    "symlink_loop",
                                    f"links back to {printable_path(target)}, which contains "
                                    "it; not followed",
                                )
                            )
                            continue
                    subfolders.append(entry.path)
                elif entry.is_file():
                    listing.files.append(entry)
                elif is_link and (problem := _link_problem(entry)) is not None:
                    listing.problems.append(problem)
            except OSError:
                if (problem := _link_problem(entry)) is not None:
                    listing.problems.append(problem)
        yield listing
        stack.extend(reversed(subfolders))


def count_images(roots: Sequence[str], exclude: Sequence[str] = (), check=None) -> int:  # noqa: ANN001
    """Image files under ``roots``; ``check()`` is called per folder (to cancel)."""
    total = 0
    for listing in walk(roots, exclude):
        if check is not None:
            check()
        total += sum(1 for e in listing.files if is_image_name(e.name))
    return total
