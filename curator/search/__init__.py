"""Nearest images by CLIP embedding: `similar` (to an image) and `search` (to a text)."""

from curator.search.index import ExactIndex, VectorIndex, build_index
from curator.search.search import Hit, search_text, similar_images

__all__ = ["ExactIndex", "Hit", "VectorIndex", "build_index", "search_text", "similar_images"]
