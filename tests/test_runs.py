"""The run loop end to end: taggers and detectors over a scanned catalog."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import func, select

from curator.cli import main
from curator.ingest.scan import ScanOptions, scan
from curator.runs.loop import RunOptions, draft_size, run_models
from db import open_catalog
from db.schema import Detection, File, ImageTag, Problem, Processed, Run, Score, Tag
from taggers.factory import load_model
from tests.fixtures.tiny_models import build_wd14_model

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
COLOURS = {
    "red": (255, 0, 0),
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}


@pytest.fixture
def colours(tmp_path) -> Path:
    root = tmp_path / "colours"
    root.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (96, 96), rgb).save(root / f"{name}.png")
    return root


@pytest.fixture
def tagger_dir(tmp_path) -> Path:
    return build_wd14_model(tmp_path / "tiny-tagger", size=32)


def cli(db, *args):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def tags_by_file(catalog, source=None) -> dict[str, dict[str, float]]:
    with catalog.session() as s:
        stmt = (
            select(File.path, Tag.name, ImageTag.score)
            .join(ImageTag, ImageTag.image_id == File.image_id)
            .join(Tag, Tag.id == ImageTag.tag_id)
        )
        if source:
            stmt = stmt.where(ImageTag.source == source)
        out: dict[str, dict[str, float]] = {}
        for path, name, score in s.execute(stmt):
            out.setdefault(Path(path).stem, {})[name] = score
    return out


def test_tag_through_cli_stores_thresholded_tags_and_rating(tmp_path, colours, tagger_dir):
    db = tmp_path / "c.db"
    cli(db, "scan", colours, "--quiet")
    out = json.loads(cli(db, "tag", "-m", tagger_dir, "--workers", "0", "--json"))
    assert out[0]["done"] == len(COLOURS) and out[0]["failed"] == 0
    with open_catalog(str(db)) as cat:
        tags = tags_by_file(cat, "model:tiny-tagger")
        with cat.session() as s:
            ratings = {
                Path(p).stem: v
                for p, v in s.execute(
                    select(File.path, Score.value)
                    .join(Score, Score.image_id == File.image_id)
                    .where(Score.name == "rating")
                )
            }
            run = s.scalar(select(Run).where(Run.kind == "tag"))
    # One rating tag per image (the top one); general tags above 0.35, characters above 0.85.
    ratings_tagged = {
        stem: {"general", "sensitive", "questionable", "explicit"} & set(names)
        for stem, names in tags.items()
    }
    assert ratings_tagged["red"] == {"sensitive"} and ratings_tagged["blue"] == {"questionable"}
    assert all(len(found) == 1 for found in ratings_tagged.values())
    assert {"red", "red_hero"} <= set(tags["red"]) and "blue" not in tags["red"]
    assert {"blue", "blue_hero"} <= set(tags["blue"]) and "red_hero" not in tags["blue"]
    assert "green" in tags["green"] and "red_hero" not in tags["green"]
    assert "dark" in tags["black"] and "bright" in tags["white"]
    assert tags["red"]["red"] == pytest.approx(1 / (1 + pow(2.718281828, -5)), abs=1e-3)
    # The rating is the highest of the four rows: red → sensitive, blue → questionable.
    assert ratings["red"] == 1.0 and ratings["blue"] == 2.0 and ratings["black"] == 0.0
    # ... and all four ratings' scores are kept as scores.
    with open_catalog(str(db)) as cat, cat.session() as s:
        names = set(s.scalars(select(Score.name).where(Score.name.startswith("rating:"))))
    assert names == {"rating:general", "rating:sensitive", "rating:questionable", "rating:explicit"}
    assert run.status == "finished" and run.model == "tiny-tagger" and run.revision
    assert run.params["general_threshold"] == 0.35 and run.counts["done"] == len(COLOURS)

    shown = json.loads(cli(db, "tags", "show", colours / "red.png", "--json"))
    assert {t["name"] for t in shown["tags"]} >= {"red", "red_hero"}
    top = json.loads(cli(db, "tags", "top", "--category", "character", "--json"))
    assert {r["name"] for r in top} == {"red_hero", "blue_hero"}


def test_thresholds_and_mcut_change_what_is_kept(tmp_path, colours, tagger_dir):
    db = tmp_path / "c.db"
    cli(db, "scan", colours, "--quiet")
    cli(
        db,
        "tag",
        "-m",
        tagger_dir,
        "--workers",
        "0",
        "--general-threshold",
        "0.999",
        "--character-threshold",
        "0.999",
        "--quiet",
    )
    with open_catalog(str(db)) as cat:
        tags = tags_by_file(cat)
    assert "red" not in tags["red"] and "red_hero" not in tags["red"]
    assert set(tags["red"]) == {"sensitive"}  # the top rating is always kept


def test_rerun_does_only_new_images_and_redo_forces(tmp_path, colours, tagger_dir):
    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [colours], ScanOptions(workers=1))
        model = load_model(str(tagger_dir), models_dir=tmp_path / "models")
        opts = RunOptions(workers=0)
        assert run_models(cat, [model], opts)[0].done == len(COLOURS)
        again = run_models(cat, [model], opts)[0]
        assert again.done == 0 and again.skipped == len(COLOURS)
        Image.new("RGB", (64, 64), (200, 10, 10)).save(colours / "new.png")
        scan(cat, [colours], ScanOptions(workers=1))
        assert run_models(cat, [model], opts)[0].done == 1
        assert run_models(cat, [model], RunOptions(workers=0, redo=True))[0].done == 6
        only = run_models(cat, [model], RunOptions(workers=0, redo=True, where="width>=96"))
        assert only[0].done == 5
        with cat.session() as s:
            assert s.scalar(select(func.count(Processed.id))) == 6


def test_two_models_decode_each_image_once(tmp_path, colours, tagger_dir, monkeypatch):
    import curator.runs.loop as runs

    second = build_wd14_model(tmp_path / "second-tagger", size=48)
    opened: list[str] = []
    real_open = runs.PILImage.open

    def counting_open(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [colours], ScanOptions(workers=1))
        monkeypatch.setattr(runs.PILImage, "open", counting_open)
        models = [load_model(str(d), models_dir=tmp_path / "m") for d in (tagger_dir, second)]
        summaries = run_models(cat, models, RunOptions(workers=0))
        assert [s.done for s in summaries] == [len(COLOURS)] * 2
        assert len(opened) == len(COLOURS)
        monkeypatch.undo()
        tags = tags_by_file(cat)
        assert "red_hero" in tags["red"]


def test_parallel_decoding_gives_the_same_tags(tmp_path, colours, tagger_dir):
    results = []
    for workers in (0, 2):
        with open_catalog(str(tmp_path / f"c{workers}.db")) as cat:
            scan(cat, [colours], ScanOptions(workers=1))
            model = load_model(str(tagger_dir), models_dir=tmp_path / "m")
            run_models(cat, [model], RunOptions(workers=workers, batch_size=2))
            results.append(tags_by_file(cat))
    assert results[0] == results[1]


def test_unreadable_image_is_a_problem_and_the_run_goes_on(tmp_path, colours, tagger_dir):
    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [colours], ScanOptions(workers=1))
        (colours / "red.png").write_bytes(b"now broken")
        model = load_model(str(tagger_dir), models_dir=tmp_path / "m")
        summary = run_models(cat, [model], RunOptions(workers=0))[0]
        assert (summary.done, summary.failed) == (len(COLOURS) - 1, 1)
        with cat.session() as s:
            problem = s.scalar(select(Problem))
        assert problem.kind == "decode_failed" and problem.path.endswith("red.png")


def test_missing_model_is_a_clear_error(tmp_path, colours):
    db = tmp_path / "c.db"
    cli(db, "scan", colours, "--quiet")
    env = {"CURATOR_MODELS": str(tmp_path / "models"), "HF_HUB_OFFLINE": "1"}
    result = CliRunner(env=env).invoke(main, ["--db", str(db), "tag", "-m", "wd-vit-tagger-v3"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "model.onnx" in lines[0] and "curator models import" in lines[0]


def test_models_list_and_import(tmp_path, tagger_dir):
    env = {"CURATOR_MODELS": str(tmp_path / "models")}
    runner = CliRunner(env=env)
    listed = json.loads(runner.invoke(main, ["models", "list", "--json"]).output)
    names = {m["name"]: m for m in listed["models"]}
    assert "wd-eva02-large-tagger-v3" in names and not names["wd-vit-tagger-v3"]["available"]
    assert names["faces"]["available"]
    result = runner.invoke(
        main, ["models", "import", str(tagger_dir), "--name", "wd-vit-tagger-v3"]
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(main, ["models", "list", "--json"]).output)
    assert {m["name"]: m for m in listed["models"]}["wd-vit-tagger-v3"]["available"]


def test_detectors_on_the_sample_photos(tmp_path):
    db = tmp_path / "c.db"
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES, photos)
    cli(db, "scan", photos, "--quiet")
    out = json.loads(cli(db, "detect", "faces", "nsfw", "text", "--workers", "0", "--json"))
    assert [o["done"] for o in out] == [4, 4, 4]
    with open_catalog(str(db)) as cat, cat.session() as s:
        scores = {
            (Path(p).stem, n): v
            for p, n, v in s.execute(
                select(File.path, Score.name, Score.value).join(
                    Score, Score.image_id == File.image_id
                )
            )
        }
        faces = s.scalars(select(Detection).where(Detection.detector == "faces")).all()
    assert scores[("astronaut", "faces")] == 1
    assert scores[("coffee", "faces")] == 0
    (face,) = [d for d in faces]
    assert 100 < face.x + face.w / 2 < 300 and face.w > 30  # the astronaut's face, in 384-px pixels
    assert all(scores[(name, "nsfw")] < 0.5 for name in ("astronaut", "coffee", "chelsea"))
    assert all(0 <= scores[(name, "text_area")] < 0.2 for name in ("astronaut", "coffee"))


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
        time.sleep(0.2)
        return self.m.predict(batch)
    def params(self):
        return self.m.params()

cat = open_catalog(sys.argv[1])
model = Slow(load_model(sys.argv[2], models_dir=sys.argv[3]))
run_models(cat, [model], RunOptions(workers=0, batch_size=2))
"""


def test_killed_run_resumes_without_duplicates(tmp_path, tagger_dir):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):
        Image.new("RGB", (40, 40), (i * 6, 255 - i * 6, 128)).save(root / f"{i:02d}.png")
    db = tmp_path / "c.db"
    with open_catalog(str(db)) as cat:
        scan(cat, [root], ScanOptions(workers=1))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(db), str(tagger_dir), str(tmp_path / "m")], env=env
    )
    with open_catalog(str(db)) as cat:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and done < 6:
            time.sleep(0.1)
            with cat.session() as s:
                done = s.scalar(select(func.count(Processed.id)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with cat.session() as s:
            done_at_kill = s.scalar(select(func.count(Processed.id)))
        assert 6 <= done_at_kill < 40
        model = load_model(str(tagger_dir), models_dir=tmp_path / "m")
        summary = run_models(cat, [model], RunOptions(workers=0))[0]
        assert summary.done == 40 - done_at_kill and summary.skipped == done_at_kill
        with cat.session() as s:
            assert s.scalar(select(func.count(Processed.id))) == 40
            per_image = s.execute(
                select(ImageTag.image_id, func.count()).group_by(ImageTag.image_id, ImageTag.tag_id)
            ).all()
            assert all(n == 1 for _, n in per_image)
            statuses = sorted(s.scalars(select(Run.status).where(Run.kind == "tag")))
        assert statuses == ["finished", "running"]


def test_draft_size_covers_the_model_input():
    assert draft_size(4000, 3000, 448) == (448, 336)
    assert draft_size(300, 1200, 448) == (112, 448)


def test_detectors_and_tagger_handle_every_mode_in_the_corpus(tmp_path, corpus, tagger_dir):
    """CMYK, 16-bit, palette with transparency, RGBA, EXIF-rotated, animated: no failures."""
    db = tmp_path / "c.db"
    cli(db, "scan", corpus, "--quiet")
    out = json.loads(cli(db, "detect", "faces", "nsfw", "text", "--workers", "0", "--json"))
    out += json.loads(cli(db, "tag", "-m", tagger_dir, "--workers", "0", "--json"))
    n = len(list(corpus.rglob("*.*"))) - 1  # minus the caption sidecar
    assert [(o["done"], o["failed"]) for o in out] == [(n, 0)] * 4


def test_deepdanbooru_through_the_run_loop(tmp_path, colours):
    from tests.fixtures.tiny_models import build_deepdanbooru_model

    model_dir = build_deepdanbooru_model(tmp_path / "tiny-ddb", size=32)
    db = tmp_path / "c.db"
    cli(db, "scan", colours, "--quiet")
    out = json.loads(cli(db, "tag", "-m", model_dir, "--workers", "0", "--json"))
    assert out[0]["done"] == len(COLOURS)
    with open_catalog(str(db)) as cat:
        tags = tags_by_file(cat)
        with cat.session() as s:
            blue_rating = s.scalar(
                select(Score.value)
                .join(File, File.image_id == Score.image_id)
                .where(File.path.endswith("blue.png"), Score.name == "rating")
            )
    assert "blue" in tags["blue"] and "red" not in tags["blue"]
    assert "red_hero" in tags["red"]
    assert blue_rating == 0.0  # DeepDanbooru's rating:safe is the general rating


# --- the batch writer, cancellation, the decoded record ---------------------------------


def _many(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        Image.new("RGB", (24, 24), (i * 3 % 256, 255 - i * 3 % 256, 90)).save(root / f"{i:03d}.png")
    return root


def _statements_per_batch(tmp_path, tagger_dir, batch_size: int) -> list[int]:
    from sqlalchemy import event

    with open_catalog(str(tmp_path / f"s{batch_size}.db")) as cat:
        scan(cat, [_many(tmp_path / f"img{batch_size}", 3 * batch_size)], ScanOptions(workers=1))
        model = load_model(str(tagger_dir), models_dir=tmp_path / "m")
        counts: list[int] = []
        state = {"n": 0}

        def count(*_args):
            state["n"] += 1

        class Counting:
            def start(self, description, total=None):
                pass

            def set_total(self, total):
                pass

            def advance(self, n=1):
                counts.append(state["n"])
                state["n"] = 0

            def finish(self):
                pass

        event.listen(cat.engine, "before_cursor_execute", count)
        run_models(cat, [model], RunOptions(workers=0, batch_size=batch_size, reporter=Counting()))
        event.remove(cat.engine, "before_cursor_execute", count)
    return counts


def test_the_writer_issues_the_same_number_of_statements_for_any_batch_size(tmp_path, tagger_dir):
    small = _statements_per_batch(tmp_path, tagger_dir, 2)
    large = _statements_per_batch(tmp_path, tagger_dir, 32)
    # After the first (which also selects the work), a batch costs a bounded number of
    # statements, two more only when it brings tag names the catalog has not seen,
    # whether it holds 2 images or 32 (per-row writing took hundreds for 32).
    assert len(small) == len(large) == 3
    assert max(small[1:]) <= 8 and max(large[1:]) <= 8, (small, large)


def test_a_cancelled_run_is_recorded_and_resumes(tmp_path, tagger_dir):
    from curator.errors import Cancelled
    from curator.progress import CancelToken

    token = CancelToken()

    class CancelAfterFirstBatch:
        def start(self, description, total=None):
            pass

        def set_total(self, total):
            pass

        def advance(self, n=1):
            token.cancel()

        def finish(self):
            pass

    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [_many(tmp_path / "img", 10)], ScanOptions(workers=1))
        model = load_model(str(tagger_dir), models_dir=tmp_path / "m")
        options = RunOptions(
            workers=0, batch_size=4, reporter=CancelAfterFirstBatch(), cancel=token
        )
        with pytest.raises(Cancelled):
            run_models(cat, [model], options)
        with cat.session() as s:
            run = s.scalar(select(Run).where(Run.kind == "tag"))
            assert run.status == "cancelled" and run.counts["done"] == 4
            assert s.scalar(select(func.count(Processed.id))) == 4
        (again,) = run_models(cat, [model], RunOptions(workers=0, batch_size=4))
        assert (again.done, again.skipped, again.status) == (6, 4, "finished")


def test_models_receive_the_decoded_record(tmp_path):
    from taggers.base import DecodedImage, Result

    class Recorder:
        name, kind, revision, input_size = "recorder", "measure", "r1", 64

        def preprocess(self, decoded):
            assert isinstance(decoded, DecodedImage)
            return (decoded.format, decoded.original_size, decoded.image.size, decoded.quantization)

        def predict(self, batch):
            self.seen = batch
            return [Result() for _ in batch]

        def params(self):
            return {}

    root = tmp_path / "img"
    root.mkdir()
    Image.new("RGB", (1600, 800), (20, 120, 220)).save(root / "big.jpg", quality=70)
    recorder = Recorder()
    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [root], ScanOptions(workers=1))
        run_models(cat, [recorder], RunOptions(workers=0))
    ((fmt, original, decoded_size, tables),) = recorder.seen
    assert fmt == "JPEG" and original == (1600, 800)
    assert decoded_size[0] < 1600 and max(decoded_size) >= 64  # draft-decoded, still covers 64
    assert tables and len(tables[0]) == 64


def test_quality_measures_transparent_icons_as_seen(tmp_path):
    from curator.runs.quality_run import compute_quality

    root = tmp_path / "icons"
    root.mkdir()
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    for x in range(16, 48):
        for y in range(16, 48):
            icon.putpixel((x, y), (0, 0, 0, 255 if (x // 4 + y // 4) % 2 else 0))
    icon.save(root / "icon.png")
    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [root], ScanOptions(workers=1))
        summary = compute_quality(cat, workers=0)
        assert summary.measured == 1
        with cat.session() as s:
            value = s.scalar(select(Score.value).where(Score.name == "sharpness"))
            runs = s.scalars(select(Run.revision).where(Run.kind == "quality")).all()
    # Black squares on transparent black: flattened onto white they are a sharp pattern.
    assert value > 1000
    assert runs and all(runs)  # every quality run has a revision


def test_odd_model_outputs_are_skipped_or_one_line_errors(tmp_path, colours):
    from taggers.base import Detection as Det
    from taggers.base import Result
    from taggers.errors import TaggerError

    class Odd:
        name, kind, revision, input_size = "odd", "detector", "o1", None

        def __init__(self, results_per_batch=None):
            self.results_per_batch = results_per_batch

        def preprocess(self, decoded):
            return decoded.original_size

        def predict(self, batch):
            n = len(batch) if self.results_per_batch is None else self.results_per_batch
            nan = float("nan")
            return [
                Result(
                    scores={"odd": nan, "fine": 1.0},
                    detections=[Det("x", 0.9, (nan, 0, 1, 1)), Det("y", 0.8, (1, 2, 3, 4))],
                )
                for _ in range(n)
            ]

        def params(self):
            return {}

    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [colours], ScanOptions(workers=1))
        (summary,) = run_models(cat, [Odd()], RunOptions(workers=0), kind="detect")
        assert summary.done == len(COLOURS) and summary.nonfinite == 2 * len(COLOURS)
        with cat.session() as s:
            assert set(s.scalars(select(Detection.label))) == {"y"}
            assert set(s.scalars(select(Score.name))) == {"fine"}
        with pytest.raises(TaggerError, match="gave 1 results for 5 images"):
            run_models(cat, [Odd(results_per_batch=1)], RunOptions(workers=0, redo=True))


def test_decoder_warnings_stay_off_the_terminal_during_a_run(tmp_path, tagger_dir, capfd):
    from tests.corpus import jpeg_with_corrupt_exif

    root = tmp_path / "warn"
    root.mkdir()
    jpeg_with_corrupt_exif(root / "exif.jpg")
    with open_catalog(str(tmp_path / "c.db")) as cat:
        scan(cat, [root], ScanOptions(workers=0))
        capfd.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (summary,) = run_models(cat, [load_model(str(tagger_dir))], RunOptions(workers=0))
    out, err = capfd.readouterr()
    assert summary.done == 1 and summary.failed == 0
    assert [str(w.message) for w in caught] == []
    assert "EXIF" not in out + err and "Warning" not in out + err
