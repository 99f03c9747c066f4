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


# Racing edits of the same images: each process renames, replaces, undoes and redoes the
# same tags at the same moment. Serialised per image, the outcome is that of SOME order
# of the calls: one rename or replacement wins each image, one undo and one redo of an
# edit take effect, and the others find nothing left to do.
RACE_IMAGES = 60
RACE_ROUNDS = 3

RACER = r"""
import json, sys, time

from curator.curation.history import redo, undo
from curator.curation.tag_edits import rename_tag, replace_tags
from curator.errors import UsageError
from db import open_catalog

url, me, start, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
edits = json.loads(sys.argv[5])
done = {"undo": [], "redo": []}
with open_catalog(url) as cat:
    time.sleep(max(0.0, start - time.time()))  # all start together, imports done
    for r in range(rounds):
        rename_tag(cat, f"old_{r}", f"renamed_{r}_{me}")
        replace_tags(cat, "", f"swap_{r}", f"swapped_{r}_{me}")
        for action, fn in (("undo", undo), ("redo", redo)):
            try:
                fn(cat, edit_id=edits[action][r])
                done[action].append(r)
            except UsageError:
                pass  # already undone (redone) by another process
print(json.dumps(done))
"""


def test_racing_renames_replaces_and_undos_serialise_per_image(db_path) -> None:
    import json
    import time

    from curator.curation.history import undo
    from curator.curation.tag_edits import add_tags

    url = str(db_path)
    with open_catalog(url) as cat:
        with cat.write() as s:
            s.add_all(
                Image(sha256=f"{i:064x}", bytes=1, width=8, height=8, format="PNG", mode="RGB")
                for i in range(RACE_IMAGES)
            )
        old = [f"old_{r}" for r in range(RACE_ROUNDS)]
        swap = [f"swap_{r}" for r in range(RACE_ROUNDS)]
        add_tags(cat, "", old + swap)
        # Edits in effect that all race to undo; edits undone that all race to redo.
        edits = {"undo": [], "redo": []}
        for r in range(RACE_ROUNDS):
            edits["undo"].append(add_tags(cat, "", [f"undo_{r}"]).edit_id)
            edits["redo"].append(add_tags(cat, "", [f"redo_{r}"]).edit_id)
            undo(cat, edit_id=edits["redo"][-1])

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time() + 8
    args = [url, "", f"{start}", str(RACE_ROUNDS), json.dumps(edits)]
    procs = []
    for i in range(WORKERS):
        args[1] = str(i)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RACER, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    done = [json.loads(out) for out, _ in results]

    with open_catalog(url) as cat, cat.session() as s:
        rows = s.execute(select(ImageTag.image_id, Tag.name, ImageTag.source).join(Tag)).all()
    have: dict[int, set[str]] = {}
    for image_id, name, source in rows:
        assert source == "user"
        have.setdefault(image_id, set()).add(name)
    assert len(have) == RACE_IMAGES
    for r in range(RACE_ROUNDS):
        # each undo and each redo of one edit took effect once: the tag is back
        assert sum(r in d["undo"] for d in done) == 1
        assert sum(r in d["redo"] for d in done) == 1
        for names in have.values():
            assert f"old_{r}" not in names and f"swap_{r}" not in names
            # one rename and one replacement won each image, the others found nothing
            assert len({n for n in names if n.startswith(f"renamed_{r}_")}) == 1
            assert len({n for n in names if n.startswith(f"swapped_{r}_")}) == 1
            assert f"undo_{r}" not in names and f"redo_{r}" in names
