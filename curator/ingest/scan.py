"""`curator scan`: walk folders and record every image in the catalog.

Incremental by design: a file whose size and mtime match the catalog costs one
`stat` and no decode. Decoding runs in a process pool; this process is the one
writer, committing a batch per transaction, so a killed scan resumes where it
stopped. Memory stays flat: the walk goes one folder at a time and the pool has
a bounded number of files in flight.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from curator.ingest.probe import DEFAULT_PIXEL_LIMIT, ProbeProblem, ProbeResult, probe
from curator.ingest.sidecars import parse_sidecar_tags, read_sidecar, sidecar_paths
from curator.progress import CancelToken, Reporter, phase
from curator.tags.store import replace_source_tags, set_caption
from curator.workers import process_pool
from db.engine import Catalog
from db.schema import File, Generation, Image, Problem, Run, to_signed64, utcnow

IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .webp .gif .bmp .dib .tif .tiff .avif .heic".split()
)
WRITE_BATCH = 200


@dataclass(slots=True)
class ScanOptions:
    exclude: Sequence[str] = ()
    workers: int | None = None  # None: all cores
    pixel_limit: int = DEFAULT_PIXEL_LIMIT
    follow_symlinks: bool = True
    reporter: Reporter | None = None  # progress events (see curator.progress)
    cancel: CancelToken | None = None


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
    problem_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    run_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Candidate:
    path: str
    size: int
    mtime_ns: int
    sidecars: list[str]


# --- walking ---------------------------------------------------------------------------


def _excluded(path: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


def walk_folders(
    roots: Sequence[str], exclude: Sequence[str] = (), follow_symlinks: bool = True
) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Yield (folder, entries) for every folder under roots, each folder once.

    Symlinked folders are followed but each real folder is visited once, so a
    link back to a parent cannot loop.
    """
    visited: set[tuple[int, int]] = set()
    stack = [os.path.abspath(r) for r in reversed(roots)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            continue
        visited.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        files: list[os.DirEntry[str]] = []
        subfolders: list[str] = []
        for entry in entries:
            if _excluded(entry.path, entry.name, exclude):
                continue
            try:
                if entry.is_dir(follow_symlinks=follow_symlinks):
                    subfolders.append(entry.path)
                elif entry.is_file(follow_symlinks=follow_symlinks):
                    files.append(entry)
            except OSError:
                continue
        yield folder, files
        stack.extend(reversed(subfolders))


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def count_images(roots: Sequence[str], exclude: Sequence[str] = ()) -> int:
    return sum(
        1 for _, files in walk_folders(roots, exclude) for e in files if is_image_name(e.name)
    )


def _has_surrogates(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_path(path: str) -> str:
    """A path that can be stored and printed even when its bytes are not UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# --- the scan --------------------------------------------------------------------------


class Scanner:
    """One scan of some roots into a catalog. Use `scan()` unless you need the parts."""

    def __init__(self, catalog: Catalog, options: ScanOptions):
        self.catalog = catalog
        self.options = options
        self.summary = ScanSummary()
        self._results: list[ProbeResult | ProbeProblem] = []
        self._sidecars_for: dict[str, list[str]] = {}

    def run(self, roots: Sequence[str]) -> ScanSummary:
        start = time.monotonic()
        roots = [os.path.abspath(r) for r in roots]
        for root in roots:
            if not os.path.isdir(root) and not os.path.isfile(root):
                from curator.errors import UsageError

                raise UsageError(f"no such folder or file: {root}")
        scan_started = utcnow()
        with self.catalog.write() as s:
            run = Run(kind="scan", params={"roots": roots, "exclude": list(self.options.exclude)})
            s.add(run)
        self.summary.run_id = run.id
        status = "failed"
        try:
            self._scan(roots, scan_started)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self.summary.seconds = time.monotonic() - start
            with self.catalog.write() as s:
                row = s.get(Run, run.id)
                row.status = status
                row.finished_at = utcnow()
                row.duration_s = self.summary.seconds
                row.counts = {k: v for k, v in self.summary.as_dict().items() if k != "run_id"}
        return self.summary

    def _scan(self, roots: list[str], scan_started) -> None:  # noqa: ANN001
        files_roots = [r for r in roots if os.path.isfile(r)]
        dir_roots = [r for r in roots if os.path.isdir(r)]
        total = count_images(dir_roots, self.options.exclude) + len(files_roots)
        workers = self.options.workers or os.cpu_count() or 1
        pool = process_pool(workers) if workers > 1 else None
        inflight: deque[Future] = deque()
        cap = workers * 16
        try:
            with phase(self.options.reporter, "scan", total) as bar:
                for folder, entries in self._folders(dir_roots, files_roots):
                    for cand in self._classify(folder, entries, bar):
                        self._sidecars_for[cand.path] = cand.sidecars
                        if pool is None:
                            self._collect(
                                probe(cand.path, pixel_limit=self.options.pixel_limit), bar
                            )
                            continue
                        inflight.append(
                            pool.submit(probe, cand.path, pixel_limit=self.options.pixel_limit)
                        )
                        while len(inflight) > cap:
                            self._collect(inflight.popleft().result(), bar)
                while inflight:
                    self._collect(inflight.popleft().result(), bar)
                self._flush()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        self._mark_missing(dir_roots, files_roots, scan_started)

    def _folders(self, dir_roots: list[str], files_roots: list[str]):
        yield from walk_folders(dir_roots, self.options.exclude, self.options.follow_symlinks)
        for path in files_roots:
            folder = os.path.dirname(path)
            with os.scandir(folder) as it:
                entries = [e for e in it if e.path == path]
            yield folder, entries

    def _classify(
        self, folder: str, entries: list[os.DirEntry[str]], bar: Reporter
    ) -> Iterator[_Candidate]:
        """Split a folder's images into unchanged (touched here) and to-probe (yielded)."""
        names = {e.name for e in entries}
        images = [e for e in entries if is_image_name(e.name)]
        for i in range(0, len(images), 500):
            chunk = images[i : i + 500]
            bad_names = [e for e in chunk if _has_surrogates(e.path)]
            chunk = [e for e in chunk if not _has_surrogates(e.path)]
            for e in bad_names:
                self._collect(
                    ProbeProblem(
                        printable_path(e.path), "bad_filename", "file name is not valid UTF-8"
                    ),
                    bar,
                )
            stats: dict[str, os.stat_result] = {}
            for e in chunk:
                try:
                    stats[e.path] = e.stat()
                except OSError as exc:
                    self._collect(ProbeProblem(e.path, "unreadable", str(exc)), bar)
            with self.catalog.session() as s:
                known = {
                    f.path: f for f in s.scalars(select(File).where(File.path.in_(list(stats))))
                }
                known_bad = {
                    p.path: p
                    for p in s.scalars(select(Problem).where(Problem.path.in_(list(stats))))
                }
            touch: list[int] = []
            still_bad: list[int] = []
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
                    bar.advance()
                    continue
                bad = known_bad.get(path)
                if bad is not None and bad.size == st.st_size and bad.mtime_ns == st.st_mtime_ns:
                    # The same broken bytes as last time: no need to read them again.
                    self.summary.problems += 1
                    self.summary.problem_kinds[bad.kind] = (
                        self.summary.problem_kinds.get(bad.kind, 0) + 1
                    )
                    still_bad.append(bad.id)
                    bar.advance()
                    continue
                yield _Candidate(path, st.st_size, st.st_mtime_ns, sidecars)
            if touch or resync or still_bad:
                with self.catalog.write() as s:
                    s.execute(
                        update(Problem).where(Problem.id.in_(still_bad)).values(seen_at=utcnow())
                    )
                    s.execute(
                        update(File)
                        .where(File.id.in_(touch))
                        .values(present=True, last_seen=utcnow())
                    )
                    for file_id, image_id, sidecars, stamp in resync:
                        self._import_sidecars(s, image_id, sidecars)
                        s.get(File, file_id).sidecar_mtime_ns = stamp

    def _collect(self, result: ProbeResult | ProbeProblem, bar: Reporter) -> None:
        self._results.append(result)
        bar.advance()
        if len(self._results) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        with self.catalog.write() as s:
            for result in batch:
                if isinstance(result, ProbeProblem):
                    self._record_problem(s, result)
                else:
                    self._record_image(s, result)

    def _record_problem(self, s: Session, p: ProbeProblem) -> None:
        self.summary.problems += 1
        self.summary.problem_kinds[p.kind] = self.summary.problem_kinds.get(p.kind, 0) + 1
        row = s.scalar(select(Problem).where(Problem.path == p.path))
        if row is None:
            s.add(
                Problem(
                    path=p.path, kind=p.kind, message=p.message, size=p.size, mtime_ns=p.mtime_ns
                )
            )
        else:
            row.kind, row.message, row.size, row.mtime_ns = p.kind, p.message, p.size, p.mtime_ns
            row.seen_at = utcnow()
        s.execute(update(File).where(File.path == p.path).values(present=False))

    def _record_image(self, s: Session, r: ProbeResult) -> None:
        image = s.scalar(select(Image).where(Image.sha256 == r.sha256))
        if image is None:
            image = Image(
                sha256=r.sha256,
                bytes=r.size,
                width=r.width,
                height=r.height,
                format=r.format,
                mode=r.mode,
                frames=r.frames,
                orientation=r.orientation,
                phash=to_signed64(r.phash),
            )
            s.add(image)
            s.flush()
            self.summary.new_images += 1
        elif s.scalar(
            select(File.id).where(File.image_id == image.id, File.path != r.path).limit(1)
        ):
            self.summary.relinked += 1  # known content at a new path: moved, renamed or copied
        if r.generation and s.get(Generation, image.id) is None:
            self.summary.with_parameters += 1
            s.add(Generation(image_id=image.id, **_generation_columns(r.generation)))
        sidecars = self._sidecars_for.pop(r.path, [])
        f = s.scalar(select(File).where(File.path == r.path))
        now = utcnow()
        if f is None:
            self.summary.new_files += 1
            f = File(
                path=r.path,
                folder=os.path.dirname(r.path),
                image_id=image.id,
                size=r.size,
                mtime_ns=r.mtime_ns,
                present=True,
                first_seen=now,
                last_seen=now,
            )
            s.add(f)
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
        texts = [t for t in (read_sidecar(p) for p in sidecars) if t]
        if not texts:
            return
        self.summary.sidecars += 1
        text = texts[0]
        set_caption(s, image_id, text, kind="sidecar", source="sidecar")
        tags = [tag for t in texts for tag in parse_sidecar_tags(t)]
        replace_source_tags(s, image_id, "sidecar", [(t, "general", None) for t in tags])

    def _mark_missing(self, dir_roots: list[str], files_roots: list[str], scan_started) -> None:  # noqa: ANN001
        """Files under the scanned roots that this scan did not see are now missing."""
        with self.catalog.write() as s:
            for root in dir_roots:
                prefix = root.rstrip(os.sep) + os.sep
                under = (File.folder == root.rstrip(os.sep)) | File.folder.startswith(
                    prefix, autoescape=True
                )
                result = s.execute(
                    update(File)
                    .where(under, File.present.is_(True), File.last_seen < scan_started)
                    .values(present=False)
                )
                self.summary.missing += result.rowcount or 0
                # Problems not met again were fixed, deleted or moved away.
                s.execute(
                    Problem.__table__.delete().where(
                        Problem.path.startswith(prefix, autoescape=True),
                        Problem.seen_at < scan_started,
                    )
                )


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
    """Scan folders (or single files) into the catalog; returns counts."""
    return Scanner(catalog, options or ScanOptions()).run([os.fspath(r) for r in roots])
