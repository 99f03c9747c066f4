"""Find duplicate images and mark all but one keeper per group.

Three ways to be a duplicate:
- exact: the same bytes (one sha256) at several paths. The catalog already holds
  that as one image with several files, so these are reported, never marked.
- phash: 64-bit perceptual hashes within Hamming distance k (resized, re-encoded,
  slightly cropped copies), found by multi-index hashing (`curator.curation.hamming_index`),
  never by comparing all pairs. A grayscale hash of low frequencies cannot see colour
  or small detail (the red and green variants of one clipart, folder icons with
  different emblems), so each candidate pair is confirmed by a second signal: small
  colour thumbnails read from the files, compared pixel by pixel; when a file cannot
  be read, image embeddings of one model (cosine >= the clip threshold).
- clip: image embeddings of one model with cosine similarity >= t (the same scene
  shot twice, a variant), by normalised float32 matrix products in blocks.

Groups do not chain: images are taken best first (most pixels, then the best
`aesthetic` score, then catalogued first); each not yet grouped becomes a keeper of
the images still free that are close to IT, so every member is within the distance
(or threshold) of its keeper, never only of another member. The others get
`images.duplicate_of = keeper` (nothing is deleted, and marking is an undoable edit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curator.curation.edits import ChangeSet, EditResult, chunks
from curator.curation.hamming_index import near_pairs
from curator.errors import UsageError
from curator.query.compile import compile_query
from curator.search.search import decode_vector
from curator.tags.view import TagRules
from db.engine import Catalog
from db.schema import Embedding, File, Image, Score, to_unsigned64
from taggers.pixels import to_rgb

EXACT, PHASH, CLIP = "exact", "phash", "clip"
METHODS = (EXACT, PHASH, CLIP)
DEFAULT_DISTANCE = 6
DEFAULT_THRESHOLD = 0.95
_BLOCK = 2048  # rows per block of the similarity matrix: 2048 x 2048 float32 = 16 MB
_NEIGHBOURS = 32  # nearest neighbours asked of an approximate index per image
# The confirming thumbnails: 16 x 16 colour pixels, box-filtered. Measured on copies
# (resized, JPEG q60-85, cropped 2%) the largest pixel difference stays under 40 of
# 255; a recoloured variant or another emblem on the same icon differs by 120 or more.
THUMB_SIDE = 16
MAX_PIXEL_DIFFERENCE = 64
MAX_MEAN_DIFFERENCE = 12.0


@dataclass(slots=True)
class Member:
    image_id: int
    paths: list[str]
    width: int
    height: int
    aesthetic: float | None = None
    distance: int | None = None  # Hamming distance of phashes to the keeper
    similarity: float | None = None  # cosine similarity of embeddings to the keeper

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(slots=True)
class DuplicateGroup:
    method: str  # exact, phash, clip, or several joined by "+"
    keeper: Member
    duplicates: list[Member] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class DedupResult:
    groups: list[DuplicateGroup]
    marked: int = 0
    edit_id: int | None = None
    model: str | None = None  # the embedding model compared, for clip

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": [g.as_dict() for g in self.groups],
            "marked": self.marked,
            "edit_id": self.edit_id,
            "model": self.model,
        }


@dataclass(slots=True)
class _Candidate:
    image_id: int
    phash: int | None
    width: int
    height: int
    added_at: datetime


def parse_methods(method: str | Iterable[str]) -> tuple[str, ...]:
    names = [method] if isinstance(method, str) else list(method)
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip().lower()
            if part == "all":
                out.extend(METHODS)
            elif part in METHODS:
                out.append(part)
            else:
                raise UsageError(f"unknown dedup method {part!r}; one of exact, phash, clip, all")
    return tuple(dict.fromkeys(out))


def find_duplicates(
    catalog: Catalog,
    methods: str | Iterable[str] = PHASH,
    *,
    distance: int = DEFAULT_DISTANCE,
    threshold: float = DEFAULT_THRESHOLD,
    query: str = "",
    model: str | None = None,
) -> DedupResult:
    """Groups of duplicates among the images the query selects (keeper first)."""
    with catalog.session() as s:
        return _find(s, parse_methods(methods), distance, threshold, query, model, False)


def dedup(
    catalog: Catalog,
    methods: str | Iterable[str] = PHASH,
    *,
    distance: int = DEFAULT_DISTANCE,
    threshold: float = DEFAULT_THRESHOLD,
    query: str = "",
    model: str | None = None,
) -> DedupResult:
    """Find duplicates and mark them: `duplicate_of` = the keeper of their group.

    Images already marked among the selection join their keeper's group, so runs
    with different methods add up instead of undoing each other.
    """
    methods = parse_methods(methods)
    with catalog.write() as s:
        result = _find(s, methods, distance, threshold, query, model, True)
        cs = ChangeSet(s)
        changes: dict[int, tuple[int | None, int | None]] = {}
        members = [m.image_id for g in result.groups for m in [g.keeper, *g.duplicates]]
        current: dict[int, int | None] = {}
        for chunk in chunks(members):
            current.update(
                s.execute(select(Image.id, Image.duplicate_of).where(Image.id.in_(chunk))).all()
            )
        for group in result.groups:
            if group.method == EXACT:
                continue
            keeper = group.keeper.image_id
            changes[keeper] = (current[keeper], None)
            for m in group.duplicates:
                changes[m.image_id] = (current[m.image_id], keeper)
        result.marked = cs.set_images("duplicate_of", changes)
        edit = cs.record(
            "dedup.mark",
            f"marked {result.marked} images as duplicates ({'+'.join(methods)})",
            methods=list(methods),
            distance=distance,
            threshold=threshold,
            query=query,
        )
        result.edit_id = edit.edit_id
        return result


def clear_duplicates(catalog: Catalog, query: str = "") -> EditResult:
    """Forget duplicate markings of the images the query selects (undoable)."""
    with catalog.write() as s:
        rows = s.execute(
            select(Image.id, Image.duplicate_of).where(
                compile_query(query, rules=TagRules.load(s)), Image.duplicate_of.is_not(None)
            )
        ).all()
        cs = ChangeSet(s)
        count = cs.set_images("duplicate_of", {i: (old, None) for i, old in rows})
        return cs.record("dedup.clear", f"cleared {count} duplicate markings", query=query)


# --- finding -------------------------------------------------------------------------


def _find(
    s: Session,
    methods: Sequence[str],
    distance: int,
    threshold: float,
    query: str,
    model: str | None,
    with_marks: bool,
) -> DedupResult:
    if distance < 0 or distance > 64:
        raise UsageError(f"distance must be 0..64, got {distance}")
    if not -1.0 <= threshold <= 1.0:
        raise UsageError(f"threshold is a cosine similarity, -1..1; got {threshold}")
    candidates = _candidates(s, query)
    result = DedupResult(groups=[])
    if EXACT in methods:
        result.groups.extend(_exact_groups(s, candidates))

    pairs: list[tuple[int, int, str]] = []
    if PHASH in methods:
        items = [
            (c.image_id, to_unsigned64(c.phash)) for c in candidates.values() if c.phash is not None
        ]
        pairs.extend((a, b, PHASH) for a, b, _ in near_pairs(items, distance))
    vectors: dict[int, np.ndarray] = {}
    if CLIP in methods:
        result.model, vectors = _embeddings(s, list(candidates), model, required=methods == (CLIP,))
        ids = list(vectors)
        if len(ids) > 1:
            matrix = np.stack([vectors[i] for i in ids])
            pairs.extend((ids[a], ids[b], CLIP) for a, b in similar_pairs(matrix, threshold))
    if with_marks:
        pairs.extend(
            (i, c, "marked")
            for i, c in s.execute(
                select(Image.id, Image.duplicate_of).where(Image.duplicate_of.is_not(None))
            )
            if i in candidates and c in candidates
        )
    if PHASH in methods:
        confirm = _Confirmation(s, result.model, vectors, threshold)
        pairs = [p for p in pairs if p[2] != PHASH or confirm(p[0], p[1])]
    if not pairs:
        return result

    nodes = sorted({i for a, b, _ in pairs for i in (a, b)})
    paths = _paths(s, nodes)
    aesthetic = _scores(s, nodes, "aesthetic")
    members = {
        i: Member(i, paths.get(i, []), candidates[i].width, candidates[i].height, aesthetic.get(i))
        for i in nodes
    }
    links: dict[int, dict[int, set[str]]] = {}
    for a, b, how in pairs:
        links.setdefault(a, {}).setdefault(b, set()).add(how)
        links.setdefault(b, {}).setdefault(a, set()).add(how)
    grouped: set[int] = set()
    for keeper_id in sorted(nodes, key=lambda i: _keeper_rank(members[i], candidates[i])):
        if keeper_id in grouped:
            continue
        near = [i for i in links[keeper_id] if i not in grouped]
        if not near:
            continue
        grouped.update([keeper_id, *near])
        keeper, others = members[keeper_id], [members[i] for i in near]
        for m in others:
            m.distance = _hamming(candidates[keeper_id].phash, candidates[m.image_id].phash)
            m.similarity = _cosine(vectors.get(keeper_id), vectors.get(m.image_id))
        others.sort(key=lambda m: (m.distance if m.distance is not None else 65, m.image_id))
        hows = {h for i in near for h in links[keeper_id][i]} - {"marked"}
        method = "+".join(h for h in METHODS if h in hows) or "marked"
        result.groups.append(DuplicateGroup(method, keeper, others))
    result.groups.sort(key=lambda g: (g.method == EXACT, g.keeper.image_id))
    return result


class _Confirmation:
    """Whether two phash candidates are the same picture to a second, colour-aware signal."""

    def __init__(
        self, s: Session, model: str | None, vectors: dict[int, np.ndarray], threshold: float
    ):
        self.s = s
        self.model = model  # "" once known that there is none
        self.vectors = dict(vectors)
        self.threshold = threshold
        self.thumbs: dict[int, np.ndarray | None] = {}

    def __call__(self, a: int, b: int) -> bool:
        ta, tb = self.thumb(a), self.thumb(b)
        if ta is not None and tb is not None:
            return same_picture(ta, tb)
        similarity = _cosine(self.vector(a), self.vector(b))
        return similarity is not None and similarity >= self.threshold

    def thumb(self, image_id: int) -> np.ndarray | None:
        if image_id not in self.thumbs:
            paths = _paths(self.s, [image_id]).get(image_id, [])
            self.thumbs[image_id] = next(
                (t for t in map(colour_thumbnail, paths) if t is not None), None
            )
        return self.thumbs[image_id]

    def vector(self, image_id: int) -> np.ndarray | None:
        """The image's embedding (of the model the clip method compares, else the usual one)."""
        if self.model is None:
            self.model = choose_embedding_model(self.s, None) or ""
        if self.model and image_id not in self.vectors:
            self.vectors.update(load_embeddings(self.s, self.model, [image_id]))
        return self.vectors.get(image_id)


def colour_thumbnail(path: str) -> np.ndarray | None:
    """A THUMB_SIDE x THUMB_SIDE RGB thumbnail (transparency on white), None if unreadable."""
    try:
        with PILImage.open(path) as image:
            image.draft("RGB", (THUMB_SIDE * 8, THUMB_SIDE * 8))  # JPEG: decode small
            image = ImageOps.exif_transpose(image)
            small = to_rgb(image).resize((THUMB_SIDE, THUMB_SIDE), PILImage.Resampling.BOX)
            return np.asarray(small, dtype=np.int16)
    except Exception:  # noqa: BLE001 - a file that cannot be read is simply not confirmed
        return None


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Thumbnails close everywhere: no pixel far off (detail), small mean difference."""
    difference = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return (
        int(difference.max()) <= MAX_PIXEL_DIFFERENCE
        and float(difference.mean()) <= MAX_MEAN_DIFFERENCE
    )


def _keeper_rank(m: Member, c: _Candidate) -> tuple:
    """Sort key: the keeper comes first (most pixels, best aesthetic, oldest, lowest id)."""
    best = -m.aesthetic if m.aesthetic is not None else float("inf")
    return (-m.pixels, best, c.added_at, m.image_id)


def _candidates(s: Session, query: str) -> dict[int, _Candidate]:
    """Selected images that still have a file on disk."""
    # IN, not a correlated EXISTS: SQLite would probe files by `present` once per image.
    present = Image.id.in_(select(File.image_id).where(File.present.is_(True)))
    rows = s.execute(
        select(Image.id, Image.phash, Image.width, Image.height, Image.added_at)
        .where(compile_query(query, rules=TagRules.load(s)), present)
        .order_by(Image.id)
    )
    return {r[0]: _Candidate(*r) for r in rows}


def _exact_groups(s: Session, candidates: dict[int, _Candidate]) -> list[DuplicateGroup]:
    rows = s.execute(
        select(File.image_id)
        .where(File.present.is_(True))
        .group_by(File.image_id)
        .having(func.count(File.id) > 1)
    ).scalars()
    ids = [i for i in rows if i in candidates]
    paths = _paths(s, ids)
    return [
        DuplicateGroup(
            EXACT, Member(i, paths[i], candidates[i].width, candidates[i].height, distance=0)
        )
        for i in ids
    ]


def _paths(s: Session, ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for chunk in chunks(ids):
        for image_id, path in s.execute(
            select(File.image_id, File.path)
            .where(File.image_id.in_(chunk), File.present.is_(True))
            .order_by(File.path)
        ):
            out.setdefault(image_id, []).append(path)
    return out


def _scores(s: Session, ids: Sequence[int], name: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for chunk in chunks(ids):
        out.update(
            s.execute(
                select(Score.image_id, Score.value).where(
                    Score.name == name, Score.image_id.in_(chunk)
                )
            ).all()
        )
    return out


def _hamming(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    return (to_unsigned64(a) ^ to_unsigned64(b)).bit_count()


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na and nb else 0.0


# --- embeddings ----------------------------------------------------------------------


def embedding_models(s: Session) -> dict[str, int]:
    """Embedding model name → number of images embedded, most first."""
    rows = s.execute(
        select(Embedding.model, func.count(Embedding.id))
        .group_by(Embedding.model)
        .order_by(func.count(Embedding.id).desc(), Embedding.model)
    )
    return dict(rows.all())


def choose_embedding_model(s: Session, model: str | None, dim: int | None = None) -> str | None:
    """The model asked for, else the one that embedded the most images (of width `dim`)."""
    if model is not None:
        if not s.scalar(select(Embedding.id).where(Embedding.model == model).limit(1)):
            known = ", ".join(embedding_models(s)) or "none"
            raise UsageError(f"no embeddings from model {model!r} (catalog has: {known})")
        return model
    stmt = select(Embedding.model, func.count(Embedding.id)).group_by(Embedding.model)
    if dim is not None:
        stmt = stmt.where(Embedding.dim == dim)
    rows = sorted(s.execute(stmt).all(), key=lambda r: (-r[1], r[0]))
    return rows[0][0] if rows else None


def load_embeddings(s: Session, model: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """image id → float32 vector, for the ids that have an embedding from `model`."""
    out: dict[int, np.ndarray] = {}
    for chunk in chunks(ids):
        for image_id, dim, blob in s.execute(
            select(Embedding.image_id, Embedding.dim, Embedding.vector).where(
                Embedding.model == model, Embedding.image_id.in_(chunk)
            )
        ):
            if blob is not None and len(blob) in (2 * dim, 4 * dim):
                out[image_id] = decode_vector(blob, dim)
    dims = [len(v) for v in out.values()]
    if len(set(dims)) > 1:  # rows of another width cannot be compared; keep the usual one
        usual = max(set(dims), key=dims.count)
        out = {i: v for i, v in out.items() if len(v) == usual}
    return out


def _embeddings(
    s: Session, ids: Sequence[int], model: str | None, required: bool
) -> tuple[str | None, dict[int, np.ndarray]]:
    name = choose_embedding_model(s, model)
    if name is None:
        if required:
            raise UsageError("no image embeddings in the catalog; run an embedding model first")
        return None, {}
    return name, load_embeddings(s, name, ids)


def similar_pairs(
    vectors: np.ndarray,
    threshold: float,
    block: int = _BLOCK,
    *,
    backend: str = "auto",
    neighbours: int = _NEIGHBOURS,
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of rows with cosine similarity >= threshold.

    Uses the search's vector index (`curator.search.index.build_index`): where it
    picks exact search (up to about 100,000 vectors) every pair is compared, a block
    of the similarity matrix at a time; beyond that, the approximate index finds each
    row's ``neighbours`` nearest, so the work grows as n log n rather than n².
    """
    from curator.search.index import ExactIndex, build_index

    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        return []
    index = build_index(np.arange(len(x)), x, backend)
    if not isinstance(index, ExactIndex):
        found: set[tuple[int, int]] = set()
        for i, row in enumerate(x):
            ids, sims = index.search(row, min(neighbours + 1, len(x)))
            found.update(
                (min(i, int(j)), max(i, int(j)))
                for j, sim in zip(ids, sims, strict=True)
                if int(j) != i and sim >= threshold
            )
        return sorted(found)
    x = index.vectors  # normalised
    n = len(x)
    out: list[tuple[int, int]] = []
    for i0 in range(0, n, block):
        a = x[i0 : i0 + block]
        for j0 in range(i0, n, block):
            sims = a @ x[j0 : j0 + block].T
            rows, cols = np.nonzero(sims >= threshold)
            rows, cols = rows + i0, cols + j0
            keep = cols > rows
            out.extend(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    out.sort()
    return out
