"""Several processes writing one catalog at once lose nothing (on either engine).

On PostgreSQL each process has its own connection and nothing serialises them but the
database: scans of the same folder race to insert the same images and files, tag edits
race on the same images and new tag names, model writes replace the same rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from db import open_catalog
from db.schema import File, Image, ImageTag, Tag

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
ROUNDS = 3

WORKER = r"""
import sys
from types import SimpleNamespace

from curator.curation.tag_edits import add_tags, remove_tags
from curator.ingest.scan import ScanOptions, scan
from curator.runs.writer import Item, write_batch
from db import open_catalog
from db.schema import Image
from sqlalchemy import select
from taggers.base import Result, Tag

url, folder, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = SimpleNamespace(name="racer", kind="tagger", revision="1", source=None)
with open_catalog(url) as cat:
    for r in range(rounds):
        scan(cat, [folder], ScanOptions(workers=0))
        add_tags(cat, "", ["shared", f"worker_{me}", f"round_{r}"])
        remove_tags(cat, "", [f"worker_{me}"])
        add_tags(cat, "", [f"worker_{me}"])
        with cat.session() as s:
            ids = list(s.scalars(select(Image.id)))
        tags = [Tag(f"model_{me}_{r}", "general", 0.5), Tag("model_common", "general", 0.9)]
        with cat.write() as s:
            write_batch(s, [model], [None], [Item(0, i, Result(tags=list(tags))) for i in ids], [])
"""


def test_concurrent_writers_lose_nothing(db_path, corpus: Path) -> None:
    url = str(db_path)
    open_catalog(url).close()  # created once, as a team creates its catalog
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(corpus), str(i), str(ROUNDS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(WORKERS)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out

    files = {p for p in corpus.rglob("*") if p.is_file()}
    with open_catalog(url) as cat, cat.session() as s:
        paths = list(s.scalars(select(File.path)))
        assert len(paths) == len(set(paths))  # one row per file, however many scanners
        images = list(s.scalars(select(Image.id)))
        assert images and len(images) == len(set(s.scalars(select(Image.sha256))))
        assert len(paths) >= len(images)
        assert {Path(p) for p in paths} <= files
        names = list(s.scalars(select(Tag.name)))
        assert len(names) == len(set(names))  # a racing tag name is created once
        rows = s.execute(select(ImageTag.image_id, Tag.name, ImageTag.source).join(Tag)).all()
        assert len(rows) == len(set(rows))
        have = {(i, n, src) for i, n, src in rows}
        for image_id in images:
            for me in range(WORKERS):
                # every worker's last edit survives on every image
                assert (image_id, f"worker_{me}", "user") in have
            assert (image_id, "shared", "user") in have
            for r in range(ROUNDS):
                assert (image_id, f"round_{r}", "user") in have
            model_rows = {n for i, n, src in have if i == image_id and src == "model:racer"}
            # the model's rows are one writer's whole batch, never a mix or a loss
            assert "model_common" in model_rows
            assert len(model_rows) == 2
        assert s.scalar(select(func.count()).select_from(ImageTag)) == len(rows)
