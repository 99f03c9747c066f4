"""`curator scan`: walk folders and record every image in the catalog.

Incremental by design: a file whose size and mtime match the catalog costs one
`stat` and no decode. Decoding runs in worker processes (`curator.ingest.probing`),
so no file can end a scan; this process is the one writer, committing a batch per
transaction (every 200 files or 2 seconds), so a killed scan resumes where it
stopped and an interrupted or cancelled one first saves what is done. Memory stays
flat: the walk goes one folder at a time and a bounded number of files is in flight.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from curator.errors import UsageError
from curator.ingest.infotext import is_a1111_infotext
from curator.ingest.probe import DEFAULT_PIXEL_LIMIT, Prepare, ProbeProblem, ProbeResult
from curator.ingest.probing import Candidate, Outcome, ProbeRunner
from curator.ingest.sidecars import SidecarError, parse_sidecar_tags, read_sidecar, sidecar_paths
from curator.ingest.walk import (
    IMAGE_EXTENSIONS,
    Listing,
    count_images,
    excluded_below,
    is_image_name,
    printable_path,
    walk,
)
from curator.progress import CancelToken, Reporter, RunOutcome, phase
from curator.tags.store import replace_source_tags, set_caption
from db.engine import Catalog, retry_transient
from db.schema import File, Generation, Image, Problem, Run, to_signed64, utcnow
from db.upsert import insert_ignore, insert_new, upsert

__all__ = [
    "IMAGE_EXTENSIONS",
    "ScanOptions",
    "ScanSummary",
    "Scanner",
    "count_images",
    "is_image_name",
    "printable_path",
    "scan",
]

WRITE_BATCH = 200  # files per transaction at most
WRITE_SECONDS = 2.0  # and at least this often, so little is lost to a kill
_CHUNK = 500  # paths per catalog lookup
# Problems that depend on the moment, not the bytes (permissions change without
# touching mtime): tried again on every scan. Every other bad file waits for a change.
RETRY_KINDS = frozenset({"unreadable", "out_of_memory"})


@dataclass(slots=True)
class ScanOptions:
    exclude: Sequence[str] = ()
    # Decoding processes: None for all cores; 0 decodes in this process, which is
    # quicker for a few files but lets a crashing decoder end the scan.
    workers: int | None = None
    pixel_limit: int = DEFAULT_PIXEL_LIMIT
    follow_symlinks: bool = True
    reporter: Reporter | None = None  # progress events (see curator.progress)
    cancel: CancelToken | None = None
    # Called once in every decoding process before any file is read, to register Pillow
    # plugins (e.g. `pillow_heif.register_heif_opener`); a module-level function.
    decoder_setup: Callable[[], None] | None = None


@dataclass(slots=True)
class ScanSummary:
    seen: int = 0
    new_files: int = 0
    new_images: int = 0
    changed: int = 0
    unchanged: int = 0
    relinked: int = 0
    missing: int = 0
    problems: int = 0
    sidecars: int = 0
    with_parameters: int = 0
    warnings: int = 0  # images read with decoder warnings (see `list_problems(warnings=True)`)
    problem_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    run_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _gone(path: str) -> bool:
    """True only when ``path`` no longer exists (not when it cannot be reached)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR)
    return False


class Scanner:
    """One scan of some roots into a catalog. Use `scan()` unless you need the parts."""

    def __init__(self, catalog: Catalog, options: ScanOptions):
        self.catalog = catalog
        self.options = options
        self.summary = ScanSummary()
        self._results: list[Outcome] = []
        self._last_write = time.monotonic()
        self._sidecars_for: dict[str, list[str]] = {}
        self._unlisted: list[str] = []  # folders this scan could not list
        # Run in the decoding workers on every file read (see `curator.ingest.probe`).
        self.prepare: Prepare | None = None
        self.stopping = False  # set when the scan saves what it has and stops
        self.phase = "scan"  # what the progress reporter calls this pass

    def run(self, roots: Sequence[str]) -> ScanSummary:
        start = time.monotonic()
        roots = [os.path.abspath(r) for r in roots]
        for root in roots:
            if not os.path.isdir(root) and not os.path.isfile(root):
                raise UsageError(f"no such folder or file: {root}")
        if self.options.decoder_setup is not None:
            try:
                self.options.decoder_setup()
            except Exception as exc:  # noqa: BLE001 - the user's hook; say which and why
                raise UsageError(f"decoder setup failed: {exc}") from exc
        scan_started = utcnow()
        with self.catalog.write() as s:
            run = Run(kind="scan", params={"roots": roots, "exclude": list(self.options.exclude)})
            s.add(run)
        self.summary.run_id = run.id
        outcome = RunOutcome()
        try:
            with outcome.track():
                self._scan(roots, scan_started)
        finally:
            self.summary.seconds = time.monotonic() - start
            with self.catalog.write() as s:
                row = s.get(Run, run.id)
                row.status = outcome.status
                row.finished_at = utcnow()
                row.duration_s = self.summary.seconds
                row.counts = {k: v for k, v in self.summary.as_dict().items() if k != "run_id"}
        return self.summary

    def _check(self) -> None:
        if self.options.cancel is not None:
            self.options.cancel.check()

    def _scan(self, roots: list[str], scan_started) -> None:  # noqa: ANN001
        files_roots = [r for r in roots if os.path.isfile(r)]
        dir_roots = [r for r in roots if os.path.isdir(r)]
        total = count_images(dir_roots, self.options.exclude, self._check) + len(files_roots)
        workers = self.options.workers
        runner = ProbeRunner(
            (os.cpu_count() or 1) if workers is None else workers,
            self.options.pixel_limit,
            self.options.decoder_setup,
            self.prepare,
        )
        done = False
        try:
            with phase(self.options.reporter, self.phase, total) as bar:
                for listing in self._folders(dir_roots, files_roots):
                    self._check()
                    if not listing.listed:
                        self._unlisted.append(listing.folder)
                    for problem in listing.problems:
                        self._collect(problem, bar, advance=False)
                    for cand in self._classify(listing, bar):
                        self._check()
                        self._sidecars_for[cand.path] = cand.sidecars
                        for outcome in runner.submit(cand):
                            self._collect(outcome, bar)
                for outcome in runner.drain():
                    self._check()
                    self._collect(outcome, bar)
                self._flush()
            done = True
        finally:
            if not done:
                self.stopping = True
                # Interrupted, cancelled or failed: keep what is finished, then stop. If
                # the catalog itself failed, this fails too: the first error is the one told.
                with contextlib.suppress(Exception):
                    self._results.extend(runner.finished())
                    self._flush()
            runner.close(wait=done)
        self._mark_missing(dir_roots, scan_started)
        self._forget_plain_comments(dir_roots)

    def _folders(self, dir_roots: list[str], files_roots: list[str]) -> Iterator[Listing]:
        yield from walk(dir_roots, self.options.exclude, self.options.follow_symlinks)
        for path in files_roots:
            folder = os.path.dirname(path)
            try:
                with os.scandir(folder) as it:
                    entries = [e for e in it if e.path == path]
            except OSError as exc:
                problem = ProbeProblem(printable_path(path), "unreadable", exc.strerror or str(exc))
                yield Listing(folder, problems=[problem], listed=False)
                continue
            yield Listing(folder, files=entries)

    def _classify(self, listing: Listing, bar: Reporter) -> Iterator[Candidate]:
        """Split a folder's images into unchanged (touched here) and to-probe (yielded)."""
        names = {e.name for e in listing.files}
        images = [e for e in listing.files if is_image_name(e.name)]
        for i in range(0, len(images), _CHUNK):
            yield from self._classify_chunk(images[i : i + _CHUNK], names, bar)

    def _classify_chunk(
        self, chunk: list[os.DirEntry[str]], names: set[str], bar: Reporter
    ) -> Iterator[Candidate]:
        stats: dict[str, os.stat_result] = {}
        for e in chunk:
            try:
                e.path.encode("utf-8")
            except UnicodeEncodeError:
                message = "file name is not valid UTF-8"
                self._collect(ProbeProblem(printable_path(e.path), "bad_filename", message), bar)
                continue
            try:
                stats[e.path] = e.stat()
            except OSError as exc:
                self._collect(ProbeProblem(e.path, "unreadable", exc.strerror or str(exc)), bar)
        with self.catalog.session() as s:
            known = {f.path: f for f in s.scalars(select(File).where(File.path.in_(list(stats))))}
            known_bad = {
                p.path: p for p in s.scalars(select(Problem).where(Problem.path.in_(list(stats))))
            }
        touch: list[int] = []
        still_bad: list[int] = []
        kept_sidecars: list[str] = []  # of unchanged files: their problems still stand
        resync: list[tuple[int, int, list[str], int | None]] = []
        for path, st in stats.items():
            self.summary.seen += 1
            sidecars = sidecar_paths(path, names)
            f = known.get(path)
            if f is not None and f.size == st.st_size and f.mtime_ns == st.st_mtime_ns:
                self.summary.unchanged += 1
                touch.append(f.id)
                stamp = _sidecar_stamp(sidecars)
                if stamp != f.sidecar_mtime_ns:
                    resync.append((f.id, f.image_id, sidecars, stamp))
                else:
                    kept_sidecars.extend(sidecars)
                bar.advance()
                continue
            bad = known_bad.get(path)
            if (
                bad is not None
                and bad.kind not in RETRY_KINDS
                and (bad.size, bad.mtime_ns) == (st.st_size, st.st_mtime_ns)
            ):
                # The same broken bytes as last time (or a file that crashed a decoder):
                # no need to read them again.
                self._count_problem(bad.kind)
                still_bad.append(bad.id)
                bar.advance()
                continue
            yield Candidate(path, st.st_size, st.st_mtime_ns, sidecars)
        if touch or resync or still_bad or kept_sidecars:
            retry_transient(functools.partial(self._touch, touch, resync, still_bad, kept_sidecars))

    def _touch(self, touch: list, resync: list, still_bad: list, kept_sidecars: list) -> None:
        """Unchanged files and problems seen again, and sidecars read again, in one write."""
        now = utcnow()
        with self._counted_once(), self.catalog.write() as s:
            if still_bad or kept_sidecars:
                s.execute(
                    update(Problem)
                    .where(Problem.id.in_(still_bad) | Problem.path.in_(kept_sidecars))
                    .values(seen_at=now)
                )
            s.execute(update(File).where(File.id.in_(touch)).values(present=True, last_seen=now))
            for file_id, image_id, sidecars, stamp in resync:
                self._import_sidecars(s, image_id, sidecars)
                s.get(File, file_id).sidecar_mtime_ns = stamp

    # --- writing -----------------------------------------------------------------------

    def _collect(self, result: Outcome, bar: Reporter, advance: bool = True) -> None:
        self._results.append(result)
        if advance:
            bar.advance()
        if (
            len(self._results) >= WRITE_BATCH
            or time.monotonic() - self._last_write >= WRITE_SECONDS
        ):
            self._flush()

    def _flush(self) -> None:
        """Write the collected outcomes in one transaction; on failure, nothing is counted."""
        self._last_write = time.monotonic()
        if not self._results:
            return

        def write() -> None:
            with self._counted_once(), self.catalog.write() as s:
                for result in self._results:
                    if isinstance(result, ProbeProblem):
                        self._record_problem(s, result)
                    else:
                        self._record_image(s, result)

        # scanners of one folder on a server race for the same rows
        retry_transient(write)
        for result in self._results:
            self._sidecars_for.pop(result.path, None)
        self._results = []

    @contextlib.contextmanager
    def _counted_once(self) -> Iterator[None]:
        """A transaction's counts stand only if it commits (it may be run again)."""
        before = copy.deepcopy(self.summary)
        try:
            yield
        except BaseException:
            self.summary = before
            raise

    def _count_problem(self, kind: str) -> None:
        self.summary.problems += 1
        self.summary.problem_kinds[kind] = self.summary.problem_kinds.get(kind, 0) + 1

    def _record_problem(self, s: Session, p: ProbeProblem) -> None:
        self._count_problem(p.kind)
        row = {"path": p.path, "kind": p.kind, "message": p.message}
        row |= {"size": p.size, "mtime_ns": p.mtime_ns, "seen_at": utcnow()}
        upsert(s, Problem.__table__, [row], ["path"], [k for k in row if k != "path"])
        s.execute(update(File).where(File.path == p.path).values(present=False))

    def _record_image(self, s: Session, r: ProbeResult) -> None:
        image = s.scalar(select(Image).where(Image.sha256 == r.sha256))
        new_image = False
        if image is None:
            fields = {
                "sha256": r.sha256,
                "bytes": r.size,
                "width": r.width,
                "height": r.height,
                "format": r.format,
                "mode": r.mode,
                "frames": r.frames,
                "orientation": r.orientation,
                "phash": to_signed64(r.phash),
            }
            image, new_image = _add_if_absent(s, Image, fields, "sha256")
        if new_image:
            self.summary.new_images += 1
        elif s.scalar(
            select(File.id).where(File.image_id == image.id, File.path != r.path).limit(1)
        ):
            self.summary.relinked += 1  # known content at a new path: moved, renamed or copied
        image.warnings = list(r.warnings) or None
        if r.warnings:
            self.summary.warnings += 1
        if r.generation and s.get(Generation, image.id) is None:
            self.summary.with_parameters += 1
            insert_ignore(
                s,
                Generation.__table__,
                [{"image_id": image.id, **_generation_columns(r.generation)}],
                ["image_id"],
            )
        sidecars = self._sidecars_for.get(r.path, [])
        f = s.scalar(select(File).where(File.path == r.path))
        now = utcnow()
        new_file = False
        if f is None:
            fields = {
                "path": r.path,
                "folder": os.path.dirname(r.path),
                "image_id": image.id,
                "size": r.size,
                "mtime_ns": r.mtime_ns,
                "present": True,
                "first_seen": now,
                "last_seen": now,
            }
            f, new_file = _add_if_absent(s, File, fields, "path")
        if new_file:
            self.summary.new_files += 1
        else:
            self.summary.changed += 1
            f.image_id, f.size, f.mtime_ns = image.id, r.size, r.mtime_ns
            f.present, f.last_seen = True, now
        stamp = _sidecar_stamp(sidecars)
        if sidecars:
            self._import_sidecars(s, image.id, sidecars)
        f.sidecar_mtime_ns = stamp
        s.execute(Problem.__table__.delete().where(Problem.path == r.path))

    def _import_sidecars(self, s: Session, image_id: int, sidecars: list[str]) -> None:
        texts = []
        for path in sidecars:
            try:
                text = read_sidecar(path)
            except SidecarError as exc:
                self._record_problem(s, ProbeProblem(path, exc.kind, exc.message))
                continue
            s.execute(Problem.__table__.delete().where(Problem.path == path))
            if text:
                texts.append(text)
        if not texts:
            return
        self.summary.sidecars += 1
        set_caption(s, image_id, texts[0], kind="sidecar", source="sidecar")
        tags = [tag for t in texts for tag in parse_sidecar_tags(t)]
        replace_source_tags(s, image_id, "sidecar", [(t, "general", None) for t in tags])

    # --- after the walk ----------------------------------------------------------------

    def _kept(self, root: str, path: str) -> bool:
        """Whether a row this scan did not meet keeps its state: the walk skipped it."""
        if excluded_below(root, path, self.options.exclude):
            return True
        return any(
            path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
            for folder in self._unlisted
        )

    def _mark_missing(self, dir_roots: list[str], scan_started) -> None:  # noqa: ANN001
        """Files under the scanned roots that are gone are now missing.

        Only gone: a file that was excluded, lies under a folder that could not be
        listed, or cannot be reached right now keeps its state.
        """
        for root in dir_roots:
            root = root.rstrip(os.sep) or os.sep
            prefix = root.rstrip(os.sep) + os.sep
            under = (File.folder == root) | File.folder.startswith(prefix, autoescape=True)
            with self.catalog.session() as s:
                unseen = s.execute(
                    select(File.id, File.path).where(
                        under, File.present.is_(True), File.last_seen < scan_started
                    )
                ).all()
                stale = s.execute(
                    select(Problem.id, Problem.path).where(
                        Problem.path.startswith(prefix, autoescape=True),
                        Problem.seen_at < scan_started,
                        # Problems a model run recorded on a catalogued file are its own.
                        ~select(File.id)
                        .where(File.path == Problem.path, File.present.is_(True))
                        .exists(),
                    )
                ).all()
            gone = [fid for fid, path in unseen if _gone(path)]
            # Problems not met again were fixed, deleted or moved away.
            fixed = [pid for pid, path in stale if not self._kept(root, path)]
            retry_transient(functools.partial(self._mark_gone, gone, fixed))
            self.summary.missing += len(gone)

    def _mark_gone(self, gone: list[int], fixed: list[int]) -> None:
        with self.catalog.write() as s:
            for i in range(0, len(gone), _CHUNK):
                ids = gone[i : i + _CHUNK]
                s.execute(update(File).where(File.id.in_(ids)).values(present=False))
            for i in range(0, len(fixed), _CHUNK):
                ids = fixed[i : i + _CHUNK]
                s.execute(Problem.__table__.delete().where(Problem.id.in_(ids)))

    def _forget_plain_comments(self, dir_roots: list[str]) -> None:
        """Drop generation parameters that older scans read from a plain EXIF comment.

        Catalogs made before the shape check stored any UserComment ("Screenshot") as
        a prompt; unchanged files are not read again, so the rows are removed here.
        Only non-PNG images qualify (a PNG's parameters come from its own chunk).
        """
        for root in dir_roots:
            root = root.rstrip(os.sep) or os.sep
            prefix = root.rstrip(os.sep) + os.sep
            under = (File.folder == root) | File.folder.startswith(prefix, autoescape=True)
            with self.catalog.session() as s:
                rows = s.execute(
                    select(Generation.image_id, Generation.raw)
                    .join(Image, Image.id == Generation.image_id)
                    .where(
                        Generation.source == "a1111",
                        Generation.steps.is_(None),
                        Image.format != "PNG",
                        select(File.id).where(File.image_id == Image.id, under).exists(),
                    )
                ).all()
            stale = [image_id for image_id, raw in rows if not is_a1111_infotext(raw)]
            if stale:
                with self.catalog.write() as s:
                    s.execute(Generation.__table__.delete().where(Generation.image_id.in_(stale)))


def _add_if_absent(s: Session, model: type, fields: dict, key: str) -> tuple[Any, bool]:
    """The row with `fields[key]`, added unless there: (row, whether this call added it).

    SQLite's write transaction holds the whole catalog, so the ORM's add() is safe (and
    quickest). On a server another machine may insert the same key between our look and
    our write: INSERT ... ON CONFLICT DO NOTHING lets the database decide."""
    if s.get_bind().dialect.name == "sqlite":
        row = model(**fields)
        s.add(row)
        s.flush()
        return row, True
    added = insert_new(s, model.__table__, fields, [key]) is not None
    column = getattr(model, key)
    return s.scalar(select(model).where(column == fields[key])), added


def _sidecar_stamp(sidecars: list[str]) -> int | None:
    stamps = []
    for p in sidecars:
        try:
            stamps.append(os.stat(p).st_mtime_ns)
        except OSError:
            continue
    return max(stamps) if stamps else None


def _generation_columns(gen: dict) -> dict:
    columns = {c.name for c in Generation.__table__.columns} - {"image_id"}
    out = {k: v for k, v in gen.items() if k in columns}
    out.setdefault("extra", {})
    return out


def scan(
    catalog: Catalog, roots: Sequence[str | Path], options: ScanOptions | None = None
) -> ScanSummary:
    """Scan folders (or single files) into the catalog; returns counts.

    Cancelling through ``options.cancel`` (or Ctrl-C) saves what is finished, records
    the run as cancelled (interrupted) and raises `Cancelled` (`KeyboardInterrupt`);
    the next scan resumes. Nothing is marked missing by a scan that did not finish.
    """
    return Scanner(catalog, options or ScanOptions()).run([os.fspath(r) for r in roots])
