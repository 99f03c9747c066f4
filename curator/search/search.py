"""Nearest images by cosine similarity of their CLIP embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curator.catalog.imageinfo import resolve_image
from curator.errors import CuratorError, UsageError
from curator.query.compile import compile_query
from curator.search.index import build_index
from db.engine import Catalog
from db.schema import Embedding, File, Image, Run

EMBED_HINT = "run `curator embed` first"


@dataclass(frozen=True, slots=True)
class Hit:
    image_id: int
    path: str | None
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "path": self.path, "score": round(self.score, 6)}


def decode_vector(blob: bytes, dim: int) -> np.ndarray:
    """A stored vector as float32: float16 or float32 bytes, told apart by length."""
    width = len(blob) // max(dim, 1)
    dtype = {2: "<f2", 4: "<f4"}.get(width)
    if dtype is None or width * dim != len(blob):
        raise CuratorError(f"an embedding of {len(blob)} bytes does not hold {dim} values")
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


def embedding_models(s: Session) -> dict[str, int]:
    rows = s.execute(select(Embedding.model, func.count()).group_by(Embedding.model)).all()
    return {model: n for model, n in rows}


def pick_model(s: Session, model: str | None) -> str:
    """The embedding model to search: the one given, or the only one in the catalog."""
    models = embedding_models(s)
    if model is not None:
        from taggers.clip.loading import safe_name

        for name in (model, safe_name(model)):
            if name in models:
                return name
        known = ", ".join(sorted(models)) or "none"
        raise UsageError(f"no image embeddings from {model!r} (have: {known}); {EMBED_HINT}")
    if not models:
        raise UsageError(f"the catalog has no image embeddings; {EMBED_HINT}")
    if len(models) > 1:
        raise UsageError(
            f"several embedding models ({', '.join(sorted(models))}); pick one with --model"
        )
    return next(iter(models))


def model_spec(s: Session, model: str) -> str:
    """The spec the embeddings were made with, to load the same CLIP model again."""
    params = s.scalar(
        select(Run.params).where(Run.model == model, Run.kind == "embed").order_by(Run.id.desc())
    )
    spec = (params or {}).get("spec")
    if not spec:
        raise UsageError(f"no recorded embed run for {model!r}; give the CLIP model with --model")
    return spec


def load_vectors(s: Session, model: str, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, float32 vectors) of one model's embeddings, filtered by a query."""
    rows = s.execute(
        select(Embedding.image_id, Embedding.dim, Embedding.vector)
        .join(Image, Image.id == Embedding.image_id)
        .where(Embedding.model == model, compile_query(where))
        .order_by(Embedding.image_id)
    ).all()
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, np.stack([decode_vector(r[2], r[1]) for r in rows])


def _paths(s: Session, ids: list[int]) -> dict[int, str]:
    rows = s.execute(
        select(File.image_id, File.path)
        .where(File.image_id.in_(ids), File.present.is_(True))
        .order_by(File.id)
    ).all()
    out: dict[int, str] = {}
    for image_id, path in rows:
        out.setdefault(image_id, path)
    return out


def _nearest(
    s: Session,
    query: np.ndarray,
    model: str,
    *,
    limit: int,
    where: str | None,
    exclude: int | None,
    backend: str,
) -> list[Hit]:
    ids, vectors = load_vectors(s, model, where)
    index = build_index(ids, vectors, backend)
    found, scores = index.search(query, limit + (1 if exclude is not None else 0))
    pairs = [(int(i), float(v)) for i, v in zip(found, scores, strict=True) if i != exclude]
    pairs = pairs[:limit]
    paths = _paths(s, [i for i, _ in pairs])
    return [Hit(i, paths.get(i), v) for i, v in pairs]


def _load_clip(spec: str, device: str) -> Any:
    from taggers.clip.loading import load_clip

    return load_clip(spec, device=device)


def similar_images(
    catalog: Catalog,
    image: str,
    *,
    model: str | None = None,
    limit: int = 10,
    where: str | None = None,
    backend: str = "auto",
    device: str = "auto",
) -> list[Hit]:
    """Images nearest to IMAGE: a catalogued path, sha256 prefix or id, or any image file."""
    with catalog.session() as s:
        name = pick_model(s, model)
        query, exclude = None, None
        try:
            exclude = resolve_image(s, image)
        except CuratorError:
            if not Path(image).is_file():
                raise
        if exclude is not None:
            blob = s.execute(
                select(Embedding.dim, Embedding.vector).where(
                    Embedding.image_id == exclude, Embedding.model == name
                )
            ).first()
            if blob is not None:
                query = decode_vector(blob[1], blob[0])
        if query is None:
            if not Path(image).is_file():
                raise UsageError(f"image {image!r} has no embedding from {name}; {EMBED_HINT}")
            query = _embed_file(s, name, image, device)
        return _nearest(s, query, name, limit=limit, where=where, exclude=exclude, backend=backend)


def _embed_file(s: Session, model: str, path: str, device: str) -> np.ndarray:
    from PIL import Image as PILImage
    from PIL import ImageOps

    from taggers.base import DecodedImage
    from taggers.clip.models import ClipEmbedder

    spec = model_spec(s, model)
    embedder = ClipEmbedder(_load_clip(spec, device), spec)
    try:
        with PILImage.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the image ({exc})") from exc
    decoded = DecodedImage(img, img.size, img.format, str(path))
    return embedder.predict([embedder.preprocess(decoded)])[0].embedding.astype(np.float32)


def search_text(
    catalog: Catalog,
    text: str,
    *,
    model: str | None = None,
    limit: int = 10,
    where: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    clip: Any = None,
) -> list[Hit]:
    """Images nearest to a text, by the CLIP model that made the embeddings."""
    if not text.strip():
        raise UsageError("search needs some text")
    with catalog.session() as s:
        name = pick_model(s, model)
        if clip is None:
            clip = _load_clip(model_spec(s, name), device)
        from taggers.clip.textenc import encode_texts

        query = encode_texts(clip.model, clip.tokenizer, [text])[0].cpu().numpy()
        return _nearest(s, query, name, limit=limit, where=where, exclude=None, backend=backend)
