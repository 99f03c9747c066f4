"""Textual-inversion embeddings used as A1111 uses them: by file name, in the prompt.

Every embedding file in the embeddings folders is known by its file stem. Where the
tokens of a name appear in a tokenized prompt, they are replaced by the embedding's
vectors (as many tokens as it has vectors), which enter the text encoder in place of the
token embeddings, as A1111's `EmbeddingsWithFixes` does. The infotext records
`TI hashes: "NAME: HASH"` with the first 12 hex digits of the file's sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import CuratorError

SAFE = (".safetensors",)
PICKLED = (".pt", ".bin")


class EmbeddingError(CuratorError):
    """An embedding file that cannot be read."""


@dataclass
class Embedding:
    name: str
    vectors: Any  # torch.Tensor [n, width]
    short_hash: str
    path: Path


@dataclass
class EmbeddingDB:
    """Embeddings by the token ids of their names, longest names first per first token."""

    by_first_token: dict[int, list[tuple[list[int], Embedding]]] = field(default_factory=dict)

    def at(self, tokens: list[int], position: int) -> tuple[Embedding, int] | None:
        for ids, embedding in self.by_first_token.get(tokens[position], ()):
            if tokens[position : position + len(ids)] == ids:
                return embedding, len(ids)
        return None

    def __bool__(self) -> bool:
        return bool(self.by_first_token)


def _vectors(data: Any, path: Path, key: str | None = None):
    """The embedding tensor from the layouts A1111 reads (A1111's own, diffusers', others);
    SDXL embeddings hold one tensor per encoder (`clip_l`, `clip_g`): `key` picks one, and
    without a key (SD 1.x/2.x) they are skipped, as A1111 skips them. None: skip."""
    import torch

    if isinstance(data, dict) and "clip_l" in data and "clip_g" in data:
        if key is None:
            return None
        tensor = data[key]
    elif key is not None:
        return None  # a single-encoder embedding does not fit SDXL
    elif isinstance(data, dict) and "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        tensor = next(iter(params.values()))
    elif isinstance(data, dict) and "emb_params" in data:
        tensor = data["emb_params"]
    elif (
        isinstance(data, dict)
        and len(data) == 1
        and isinstance(next(iter(data.values())), torch.Tensor)
    ):
        tensor = next(iter(data.values()))
    else:
        raise EmbeddingError(f"{path.name}: not a textual-inversion embedding A1111 can read")
    tensor = tensor.detach().float()
    return tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim != 2 else tensor


def load_embeddings(
    folders: list[str],
    tokenizer: Any,
    width: int,
    allow_pickle: bool = False,
    key: str | None = None,
) -> EmbeddingDB:
    """Every embedding in `folders` whose vector width fits the text encoder; `key` is the
    SDXL encoder's part of the file (`clip_l` or `clip_g`)."""
    import torch
    from safetensors.torch import load_file

    db = EmbeddingDB()
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise EmbeddingError(f"no such embeddings folder: {folder}")
        for path in sorted(root.rglob("*")):
            suffix = path.suffix.lower()
            if suffix in SAFE:
                data = load_file(str(path))
            elif suffix in PICKLED and allow_pickle:
                data = torch.load(path, map_location="cpu", weights_only=True)
            else:
                continue
            vectors = _vectors(data, path, key)
            if vectors is None or vectors.shape[-1] != width:
                continue  # made for another model family, as A1111 skips it
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            embedding = Embedding(path.stem, vectors, digest[:12], path)
            ids = tokenizer([path.stem], add_special_tokens=False)["input_ids"][0]
            if not ids:
                continue
            entries = db.by_first_token.setdefault(ids[0], [])
            entries.append((ids, embedding))
            entries.sort(key=lambda item: len(item[0]), reverse=True)
    return db
