"""Runs on Ray: the same catalog as in-process, through dying workers, kills and the CLI.

One Ray instance for the whole file (it takes seconds to start); the kill test's
driver joins it from another process with --address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import func, select

from curator.cli import main
from curator.errors import UsageError
from curator.ingest.scan import ScanOptions, scan
from curator.runs.loop import RunOptions, run_models
from db import open_catalog
from db.schema import (
    Caption,
    Detection,
    Embedding,
    File,
    ImageTag,
    Problem,
    Processed,
    Run,
    Score,
    Tag,
)
from taggers.factory import load_model
from tests.fixtures.tiny_models import build_wd14_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    pytest.importorskip("ray.data")
    from curator.runs.ray_engine import cluster

    # Workers import these tests' models (by reference) from the repository.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    try:
        with cluster() as found:
            yield found.address
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory) -> Path:
    return build_wd14_model(tmp_path_factory.mktemp("models") / "tiny-tagger", size=32)


def _images(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40 + i, 40), (i * 17 % 256, 255 - i * 9, (i * 53) % 256)).save(
            root / f"{i:02d}.png"
        )
    return root


def catalog_contents(cat) -> dict[str, list]:
    """Everything a run writes, keyed by path instead of ids."""
    path_of = select(File.image_id, func.min(File.path).label("path")).group_by(File.image_id)
    path_of = path_of.subquery()
    with cat.session() as s:

        def rows(*cols, table, extra=()):
            stmt = select(path_of.c.path, *cols).join(path_of, path_of.c.image_id == table.image_id)
            for join in extra:
                stmt = stmt.join(*join)
            return sorted(tuple(r) for r in s.execute(stmt))

        return {
            "tags": rows(
                Tag.name,
                Tag.category,
                ImageTag.source,
                ImageTag.score,
                table=ImageTag,
                extra=[(Tag, Tag.id == ImageTag.tag_id)],
            ),
            "scores": rows(Score.name, Score.value, Score.source, table=Score),
            "processed": rows(Processed.model, Processed.revision, table=Processed),
            "captions": rows(Caption.kind, Caption.text, table=Caption),
            "embeddings": rows(Embedding.model, Embedding.vector, table=Embedding),
            "detections": rows(Detection.label, Detection.score, table=Detection),
            "problems": sorted(
                (Path(p).name, k, m)
                for p, k, m in s.execute(select(Problem.path, Problem.kind, Problem.message))
            ),
        }


class Flaky:
    """The tiny tagger, but its first two model calls fail: the first kills its worker
    process, the second raises."""

    def __init__(self, model, marks: Path):
        self.m, self.marks = model, marks
        self.name, self.kind, self.revision = model.name, model.kind, model.revision
        self.input_size = model.input_size

    def _once(self, name: str) -> bool:
        try:
            (self.marks / name).touch(exist_ok=False)
        except FileExistsError:
            return False
        return True

    def load(self):
        self.m.load()

    def preprocess(self, decoded):
        return self.m.preprocess(decoded)

    def predict(self, batch):
        if self._once("model-killed"):
            os._exit(1)
        if self._once("model-raised"):
            raise RuntimeError("a transient failure")
        return self.m.predict(batch)

    def params(self):
        return self.m.params()


class Recorder:
    def __init__(self):
        self.started, self.advanced = [], 0

    def start(self, description, total=None):
        self.started.append((description, total))

    def set_total(self, total):
        pass

    def advance(self, n=1):
        self.advanced += n

    def finish(self):
        pass


def test_ray_gives_the_in_process_catalog_through_failing_workers(
    tmp_path, ray_address, tagger_dir
):
    images = _images(tmp_path / "images", 13)
    (tmp_path / "marks").mkdir()
    for engine in ("local", "ray"):
        with open_catalog(str(tmp_path / f"{engine}.db")) as cat:
            scan(cat, [images], ScanOptions(workers=1))
    (images / "03.png").write_bytes(b"broken after the scan")
    contents, summaries = [], []
    for engine in ("local", "ray"):
        with open_catalog(str(tmp_path / f"{engine}.db")) as cat:
            model = load_model(str(tagger_dir), models_dir=tmp_path / "m")
            recorder = Recorder()
            options = RunOptions(workers=0, batch_size=2, reporter=recorder)
            if engine == "ray":
                model = Flaky(model, tmp_path / "marks")
                options = RunOptions(engine="ray", workers=2, batch_size=2, reporter=recorder)
            (summary,) = run_models(cat, [model], options)
            contents.append(catalog_contents(cat))
            summaries.append(summary)
            with cat.session() as s:
                run = s.scalar(select(Run).where(Run.kind == "tag"))
            assert run.status == "finished" and run.counts["done"] == 12
    local, ray = contents
    assert local == ray
    assert len(ray["processed"]) == 12 and ray["tags"] and len(ray["problems"]) == 1
    assert {r[0].endswith("03.png") for r in ray["processed"]} == {False}
    assert [(s.done, s.failed, s.tags) for s in summaries[1:]] == [
        (s.done, s.failed, s.tags) for s in summaries[:1]
    ]
    # Every failure happened once, and was retried.
    assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == [
        "model-killed",
        "model-raised",
    ]
    assert recorder.started == [("tag on Ray", 13)] and recorder.advanced == 13
    assert run.params["engine"] == "ray"


KILL_SCRIPT = """
import sys, time
from db import open_catalog
from curator.runs.loop import RunOptions, run_models
from taggers.factory import load_model

class Slow:
    def __init__(self, model):
        self.m = model
        self.name, self.kind, self.revision = model.name, model.kind, model.revision
        self.input_size = model.input_size
    def preprocess(self, img):
        return self.m.preprocess(img)
    def predict(self, batch):
        time.sleep(0.3)
        return self.m.predict(batch)
    def params(self):
        return self.m.params()

if __name__ == "__main__":
    cat = open_catalog(sys.argv[1])
    model = Slow(load_model(sys.argv[2], models_dir=sys.argv[3]))
    run_models(cat, [model], RunOptions(engine="ray", address=sys.argv[4], batch_size=2))
"""


def test_a_killed_ray_run_resumes_from_the_cli_without_duplicates(
    tmp_path, ray_address, tagger_dir
):
    db = tmp_path / "c.db"
    with open_catalog(str(db)) as cat:
        scan(cat, [_images(tmp_path / "images", 30)], ScanOptions(workers=1))
    script = tmp_path / "driver.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(tagger_dir), str(tmp_path / "m"), ray_address],
        env=env,
        stderr=subprocess.PIPE,
    )
    with open_catalog(str(db)) as cat:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and done < 4 and proc.poll() is None:
            time.sleep(0.1)
            with cat.session() as s:
                done = s.scalar(select(func.count(Processed.id)))
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with cat.session() as s:
            done_at_kill = s.scalar(select(func.count(Processed.id)))
    assert 4 <= done_at_kill < 30

    result = CliRunner().invoke(
        main,
        ["--db", str(db), "tag", "-m", str(tagger_dir), "--engine", "ray"]
        + ["--address", ray_address, "--batch-size", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.output)
    assert (summary["done"], summary["skipped"]) == (30 - done_at_kill, done_at_kill)
    with open_catalog(str(db)) as cat, cat.session() as s:
        assert s.scalar(select(func.count(Processed.id))) == 30
        per_pair = s.execute(
            select(func.count())
            .select_from(ImageTag)
            .group_by(ImageTag.image_id, ImageTag.tag_id, ImageTag.source)
        ).scalars()
        assert set(per_pair) == {1}
        statuses = sorted(s.scalars(select(Run.status).where(Run.kind == "tag")))
    assert statuses == ["finished", "running"]


def test_without_ray_the_engine_is_one_line_before_any_work(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    db = tmp_path / "c.db"
    # A model that does not exist: the engine is refused before it is looked up.
    result = CliRunner().invoke(
        main, ["--db", str(db), "tag", "-m", str(tmp_path / "nowhere"), "--engine", "ray"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'curator[ray]'" in lines[0], result.output
    with open_catalog(str(db)) as cat, pytest.raises(UsageError, match=r"curator\[ray\]"):
        run_models(cat, [], RunOptions(engine="ray"))


def test_address_without_the_ray_engine_is_refused(tmp_path):
    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "c.db"), "tag", "--address", "10.0.0.1:6379"]
    )
    assert result.exit_code == 2 and "--engine ray" in result.output


def test_an_unreachable_cluster_is_one_line_at_once(tmp_path, tagger_dir):
    pytest.importorskip("ray.data")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "c.db"
    with open_catalog(str(db)) as cat:
        scan(cat, [_images(tmp_path / "images", 2)], ScanOptions(workers=1))
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        ["--db", str(db), "tag", "-m", str(tagger_dir), "--engine", "ray"]
        + ["--address", f"127.0.0.1:{port}"],
    )
    assert result.exit_code == 1 and time.monotonic() - started < 30
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in lines[0]
    with open_catalog(str(db)) as cat, cat.session() as s:
        assert s.scalar(select(func.count(Run.id)).where(Run.kind == "tag")) == 0


class Broken:
    """The tiny tagger, but every model call fails."""

    def __init__(self, model):
        self.m = model
        self.name, self.kind, self.revision = model.name, model.kind, model.revision
        self.input_size = model.input_size

    def preprocess(self, decoded):
        return self.m.preprocess(decoded)

    def predict(self, batch):
        raise ValueError("shapes do not fit")

    def params(self):
        return {}


def test_a_model_failing_on_the_cluster_is_the_in_process_one_line_error(
    tmp_path, ray_address, tagger_dir
):
    from taggers.errors import TaggerError

    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [_images(tmp_path / "images", 2)], ScanOptions(workers=1))
        model = Broken(load_model(str(tagger_dir), models_dir=tmp_path / "m"))
        with pytest.raises(TaggerError) as failed:
            run_models(cat, [model], RunOptions(engine="ray", batch_size=2))
        assert str(failed.value) == "model tiny-tagger failed on a batch: shapes do not fit"
        with cat.session() as s:
            assert s.scalar(select(Run.status).where(Run.kind == "tag")) == "failed"
            assert s.scalar(select(func.count(Processed.id))) == 0


def test_model_workers_default_to_one_per_gpu_else_one_per_two_cpus():
    from curator.runs.ray_engine import Cluster, model_workers, shard_rows

    assert model_workers(RunOptions(), Cluster(2, 0, "")) == (1, 0.0)
    assert model_workers(RunOptions(), Cluster(16, 0, "")) == (8, 0.0)
    assert model_workers(RunOptions(), Cluster(64, 8, "")) == (8, 1.0)
    assert model_workers(RunOptions(workers=3, worker_gpus=0), Cluster(64, 8, "")) == (3, 0)
    assert model_workers(RunOptions(workers=16, worker_gpus=0.5), Cluster(64, 8, "")) == (16, 0.5)
    with pytest.raises(UsageError, match="need 9 GPUs; the cluster has 8"):
        model_workers(RunOptions(workers=9), Cluster(64, 8, ""))
    # Shards hold whole model batches, a few per CPU, and never more than 1024 jobs.
    assert shard_rows(13, 2, 2) == 2 and shard_rows(1000, 8, 2) == 128
    assert shard_rows(10**7, 8, 2) == 1024 and shard_rows(10**7, 3, 2) == 1023


def test_tag_paths_on_ray_catalogs_and_tags_only_those_paths(tmp_path, ray_address, tagger_dir):
    db = tmp_path / "c.db"
    with open_catalog(str(db)) as cat:
        scan(cat, [_images(tmp_path / "old", 3)], ScanOptions(workers=1))
    new = tmp_path / "new"
    new.mkdir()
    for i in range(4):  # other sizes than old/'s: other images, not more files of them
        Image.new("RGB", (60 + i, 30), (i * 40, 90, 200 - i * 30)).save(new / f"{i}.png")
    result = CliRunner().invoke(
        main,
        ["--db", str(db), "tag", str(new), "-m", str(tagger_dir), "--engine", "ray"]
        + ["--address", ray_address, "--json"],
    )
    assert result.exit_code == 0, result.output
    with open_catalog(str(db)) as cat, cat.session() as s:
        assert s.scalar(select(func.count(File.id))) == 7
        tagged = s.scalars(
            select(File.path).join(Processed, Processed.image_id == File.image_id)
        ).all()
    assert sorted(Path(p).parent.name for p in tagged) == ["new"] * 4
