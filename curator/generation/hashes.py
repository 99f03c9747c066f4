"""Checkpoint hashes as A1111 shows them in infotext `Model hash:`.

AutoV2: the first 10 hex digits of the file's sha256. The old hash: sha256 of the
64 KiB at offset 1 MiB, first 8 hex digits (A1111's `model_hash`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def autov2_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()[:10]


def old_model_hash(path: str | Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
