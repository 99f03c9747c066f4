"""Registered model files: checkpoints, VAEs, LoRAs, embeddings, hypernetworks.

Hashes are computed once and kept in the catalog until the file's size or modification
time changes: AutoV2 (first 10 hex digits of the sha256) and the old 8-digit hash, so
an infotext `Model hash:` of either kind finds its file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_, select

from curator.errors import CuratorError
from curator.generation.hashes import old_model_hash
from curator.progress import NullReporter, Reporter
from db import Catalog
from db.schema import ModelFile

KINDS = ("checkpoint", "vae", "lora", "embedding", "hypernetwork")
MODEL_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}


class RegistryError(CuratorError):
    """A model file that cannot be registered or found."""


@dataclass
class ModelRecord:
    path: str
    kind: str
    name: str
    autov2: str | None
    old_hash: str | None
    sha256: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _record(row: ModelFile) -> ModelRecord:
    return ModelRecord(row.path, row.kind, row.name, row.autov2, row.old_hash, row.sha256)


def _candidates(path: Path) -> list[Path]:
    """Model files under `path`; a diffusers folder (model_index.json) counts as one."""
    if path.is_file():
        return [path]
    if (path / "model_index.json").is_file():
        return [path]
    found: list[Path] = []
    for root, dirs, files in os.walk(path):
        here = Path(root)
        if (here / "model_index.json").is_file():
            found.append(here)
            dirs[:] = []
            continue
        dirs.sort()
        found += [here / f for f in sorted(files) if Path(f).suffix.lower() in MODEL_SUFFIXES]
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def register_model_files(
    catalog: Catalog,
    paths: list[str | Path],
    kind: str = "checkpoint",
    reporter: Reporter | None = None,
) -> list[ModelRecord]:
    """Record model files (files, folders of them, diffusers folders) with their hashes."""
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    reporter = reporter or NullReporter()
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise RegistryError(f"no such file or folder: {given}")
        files += _candidates(path.resolve())
    reporter.start("hashing", total=len(files))
    records = []
    with catalog.session() as session:
        for path in files:
            stat = path.stat()
            row = session.scalar(select(ModelFile).where(ModelFile.path == str(path)))
            fresh = row is None or (row.size, row.mtime_ns) != (stat.st_size, stat.st_mtime_ns)
            if row is None:
                row = ModelFile(
                    path=str(path),
                    kind=kind,
                    name=path.stem if path.is_file() else path.name,
                    size=0,
                    mtime_ns=0,
                )
                session.add(row)
            row.kind = kind
            if fresh:
                row.size, row.mtime_ns = stat.st_size, stat.st_mtime_ns
                if path.is_file():
                    row.sha256 = _sha256(path)
                    row.autov2 = row.sha256[:10]
                    row.old_hash = old_model_hash(path)
            records.append(_record(row))
            reporter.advance(1)
        session.commit()
    reporter.finish()
    return records


def list_model_files(catalog: Catalog, kind: str | None = None) -> list[ModelRecord]:
    stmt = select(ModelFile).order_by(ModelFile.kind, ModelFile.name)
    if kind:
        stmt = stmt.where(ModelFile.kind == kind)
    with catalog.session() as session:
        return [_record(row) for row in session.scalars(stmt)]


def find_model_file(catalog: Catalog, key: str, kind: str = "checkpoint") -> ModelRecord | None:
    """A registered file by AutoV2 hash, old hash, full sha256, name or `name [hash]`."""
    key = key.strip()
    if key.endswith("]") and " [" in key:  # A1111's checkpoint title: "name [hash]"
        key = key[key.rindex(" [") + 2 : -1]
    lowered = key.lower()
    with catalog.session() as session:
        stmt = select(ModelFile).where(
            ModelFile.kind == kind,
            or_(
                ModelFile.autov2 == lowered,
                ModelFile.old_hash == lowered,
                ModelFile.sha256 == lowered,
                ModelFile.name == key,
            ),
        )
        row = session.scalars(stmt.order_by(ModelFile.id)).first()
        return _record(row) if row is not None else None


def model_file_id(catalog: Catalog, path: str) -> int | None:
    with catalog.session() as session:
        return session.scalar(select(ModelFile.id).where(ModelFile.path == str(path)))
