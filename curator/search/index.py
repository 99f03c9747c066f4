"""One vector-index interface: exact cosine search, or an approximate backend.

Exact search is one matrix product over float32 vectors, fast enough up to about
100,000 images. Beyond that, `build_index(..., backend="hnsw")` uses hnswlib
(an optional dependency: pip install hnswlib), with the same interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from curator.errors import CuratorError

EXACT_LIMIT = 100_000


class VectorIndex(Protocol):
    def __len__(self) -> int: ...

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine similarities) of the k nearest vectors, best first."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class ExactIndex:
    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vectors = _normalise(vectors) if len(ids) else np.zeros((0, 1), np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.ids) or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self.vectors @ _normalise(query).ravel()
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        # Ties by id, so results are stable from run to run.
        order = np.lexsort((self.ids[top], -scores[top]))
        top = top[order]
        return self.ids[top], scores[top]


class HnswIndex:
    """hnswlib's approximate nearest neighbours over cosine distance."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, ef: int = 200):
        try:
            import hnswlib
        except ImportError as exc:
            raise CuratorError(
                "approximate search needs hnswlib: pip install hnswlib (or use exact search)"
            ) from exc
        vectors = _normalise(vectors)
        self._n = len(ids)
        self.index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
        self.index.init_index(max_elements=max(1, self._n), ef_construction=ef, M=32)
        if self._n:
            self.index.add_items(vectors, np.asarray(ids, dtype=np.int64))
        self.index.set_ef(ef)

    def __len__(self) -> int:
        return self._n

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._n)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        labels, distances = self.index.knn_query(_normalise(query).reshape(1, -1), k=k)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)


def build_index(ids: np.ndarray, vectors: np.ndarray, backend: str = "auto") -> VectorIndex:
    """`exact`, `hnsw`, or `auto`: exact up to EXACT_LIMIT vectors, hnsw beyond if installed."""
    if backend == "exact":
        return ExactIndex(ids, vectors)
    if backend == "hnsw":
        return HnswIndex(ids, vectors)
    if backend != "auto":
        raise CuratorError(f"unknown index backend {backend!r}; use exact, hnsw or auto")
    if len(ids) > EXACT_LIMIT:
        try:
            return HnswIndex(ids, vectors)
        except CuratorError:
            pass  # without hnswlib, exact search still answers, only slower
    return ExactIndex(ids, vectors)
