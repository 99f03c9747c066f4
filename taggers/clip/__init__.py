"""CLIP models: loading by spec, image embeddings, and the interrogator."""

from taggers.clip.loading import ClipBundle, ClipFiles, load_clip, resolve_clip

__all__ = ["ClipBundle", "ClipFiles", "load_clip", "resolve_clip"]
