"""Tagging throughput: model-only vs end-to-end `curator tag`, fp32 vs int8; writer rows/s.

    python benchmarks/tag.py [--images 24] [--repeats 3] [--size 448] [--arch convnext_tiny]
    python benchmarks/tag.py --writer-only [--writer-images 80] [--writer-tags 9000]
    python benchmarks/tag.py --kohya PATH/TO/sd-scripts [--kohya-images 30] [--repeats 3]

Builds a WD14-sized tagger with random weights (timm ConvNeXt-T at 448 px,
10,861 sigmoid outputs, NHWC BGR input, exported to ONNX) with a matching
selected_tags.csv, generates JPEG photos of mixed sizes, then measures in one run:

* model-only images/s: pre-decoded, pre-processed batches through the same
  onnxruntime session the run loop uses;
* end-to-end images/s: `run_models` over the catalog (decode in workers, batch,
  predict, write), excluding the scan;
* their ratio, for fp32 and for the int8 dynamically quantised copy (MatMul/Gemm
  with signed int8 weights), and how many above-threshold tags int8 shares with fp32;
* the batch writer's rows/s with a model that puts ~9,000 tags on every image.

With ``--kohya``, instead: whole-process wall time of kohya's WD14 tagger
(finetune/tag_images_by_wd14_tagger.py --onnx, batch 4) against `curator tag PATHS`
(scan and tag in one pass into a new catalog, batch 4) on the same images and model:
large JPEG wallpapers and RGBA PNG clipart, each tool on its own copy of the folder
(kohya writes caption files beside the images). Runs alternate in order; medians.

Targets: int8 model-only >= 1.8x fp32; end-to-end >= 0.9x of model-only; Curator
whole process >= 1.4x kohya's.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def build_model(folder: Path, arch: str, size: int, n_tags: int) -> Path:
    import timm
    import torch

    class WD14Like(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = timm.create_model(arch, pretrained=False, num_classes=n_tags)

        def forward(self, x):  # NHWC, BGR, 0-255 like the WD14 exports
            x = x.permute(0, 3, 1, 2).flip(1) / 255.0
            return torch.sigmoid(self.net(x))

    folder.mkdir(parents=True, exist_ok=True)
    model = WD14Like().eval()
    # Random weights score every tag near 0.5; bias the head so an image gets a
    # realistic few dozen general tags above the 0.35 threshold, as real WD14 models do.
    # (Not characters: kohya's tagger fails on a character tag over its threshold.)
    first_character = n_tags - n_tags // 20
    with torch.no_grad():
        bias = model.net.get_classifier().bias
        bias.fill_(-5.0)
        seed = torch.Generator().manual_seed(0)
        favoured = 4 + torch.randperm(first_character - 4, generator=seed)
        bias[favoured[:40]] = 5.0
    dummy = torch.zeros(1, size, size, 3)
    torch.onnx.export(
        model,
        (dummy,),
        str(folder / "model.onnx"),
        input_names=["input_1:0"],
        output_names=["predictions_sigmoid"],
        dynamic_axes={"input_1:0": {0: "batch"}, "predictions_sigmoid": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    with open(folder / "selected_tags.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, name in enumerate(["general", "sensitive", "questionable", "explicit"]):
            w.writerow([i, name, 9, 0])
        # SmilingWolf's layout: ratings, then general tags, then characters (kohya's
        # tagger relies on this order).
        for i in range(4, n_tags):
            w.writerow([i, f"tag_{i}", 4 if i >= first_character else 0, 0])
    return folder


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = int(rng.integers(768, 1600)), int(rng.integers(768, 1600))
        small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(
            folder / f"{i:04d}.jpg", quality=90
        )


def make_mixed_images(folder: Path, n: int) -> None:
    """Wallpapers (JPEG, 1920-3840 px wide) and clipart (RGBA PNG, ~1000 px), 2:1."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i % 3 != 2:
            w = int(rng.integers(1920, 3841))
            h = w * 9 // 16
            small = rng.integers(0, 255, (h // 32, w // 32, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
            img.save(folder / f"{i:04d}.jpg", quality=92)
        else:
            w, h = int(rng.integers(800, 1200)), int(rng.integers(800, 1200))
            img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            draw = ImageDraw.Draw(img)
            for _ in range(12):
                x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
                x1, y1 = x0 + int(rng.integers(50, 400)), y0 + int(rng.integers(50, 400))
                colour = tuple(int(c) for c in rng.integers(0, 255, 3)) + (255,)
                draw.ellipse((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0, 255), width=6)
            img.save(folder / f"{i:04d}.png")


# kohya's tagger imports only `glob_images_pathlib` from library.train_util, whose own
# imports fail with current transformers; this is that function, verbatim, and its list.
KOHYA_TRAIN_UTIL = """
IMAGE_EXTENSIONS = [
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"
]


def glob_images_pathlib(dir_path, recursive):
    image_paths = []
    if recursive:
        for ext in IMAGE_EXTENSIONS:
            image_paths += list(dir_path.rglob("*" + ext))
    else:
        for ext in IMAGE_EXTENSIONS:
            image_paths += list(dir_path.glob("*" + ext))
    image_paths = list(set(image_paths))
    image_paths.sort()
    return image_paths
"""


def kohya_side_by_side(args: argparse.Namespace, model_dir: Path, work: Path) -> None:
    import json
    import os
    import shutil
    import subprocess

    src = work / f"mixed-{args.kohya_images}"
    if not src.exists():
        make_mixed_images(src, args.kohya_images)
    scripts = work / "sd-scripts"
    if not scripts.exists():
        for part in ("finetune", "library"):
            shutil.copytree(args.kohya / part, scripts / part)
        (scripts / "library" / "train_util.py").write_text(KOHYA_TRAIN_UTIL)
    kohya_models = work / "kohya-models"
    (kohya_models / "local_bench").mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "selected_tags.csv"):
        target = kohya_models / "local_bench" / name
        if not target.exists():
            shutil.copy(model_dir / name, target)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("OMP_NUM_THREADS", None)

    def fresh_copy(name: str) -> Path:
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for f in src.iterdir():
            os.link(f, folder / f.name)
        return folder

    def kohya() -> float:
        folder = fresh_copy("kohya-run")
        cmd = [
            sys.executable,
            "finetune/tag_images_by_wd14_tagger.py",
            "--onnx",
            "--model_dir",
            str(kohya_models),
            "--repo_id",
            "local/bench",
            "--batch_size",
            str(args.kohya_batch),
            str(folder),
        ]
        t = time.perf_counter()
        # kohya's setup installs `library` as a package; its folder on the path does the same.
        kohya_env = {**env, "PYTHONPATH": str(scripts)}
        subprocess.run(cmd, cwd=scripts, env=kohya_env, check=True, capture_output=True)
        took = time.perf_counter() - t
        assert len(list(folder.glob("*.txt"))) == args.kohya_images, "kohya tagged too few"
        return took

    def curator(quantize: str | None = None) -> float:
        folder = fresh_copy("curator-run")
        db = work / "kohya-side.db"
        db.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "curator.cli", "--db", str(db), "tag", "-m", str(model_dir)]
        cmd += ["--batch-size", str(args.kohya_batch), "--json", str(folder)]
        if quantize:
            cmd += ["--quantize", quantize]
        t = time.perf_counter()
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        took = time.perf_counter() - t
        (summary,) = json.loads(out)
        assert summary["done"] == args.kohya_images, summary
        return took

    runs: dict[str, list[float]] = {"kohya": [], "curator": [], "curator int8": []}
    # Build the int8 copy before timing (the cache is the model folder's).
    curator("int8")
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            took = kohya() if name == "kohya" else curator("int8" if "int8" in name else None)
            runs[name].append(took)
            print(f"  {name}: {took:.1f}s", flush=True)
    k = statistics.median(runs["kohya"])
    print(f"{args.kohya_images} images (JPEG wallpapers, PNG clipart), batch {args.kohya_batch}:")
    print(f"kohya WD14 tagger: {k:.1f}s (median of {args.repeats}, whole process)")
    for name in ("curator", "curator int8"):
        c = statistics.median(runs[name])
        print(f"{name} scan + tag: {c:.1f}s, {k / c:.2f}x kohya (target >= 1.4x)")


def model_only(model, paths: list[str], batch: int) -> tuple[float, list[set[str]]]:
    """Images/s of predict alone on preprocessed arrays, and each image's tag names."""
    from curator.runs.loop import decode

    arrays = [model.preprocess(decode(p, model.input_size)) for p in paths]
    model.predict(np.stack(arrays[:batch]))  # warm-up: first run
    t = time.perf_counter()
    tags: list[set[str]] = []
    for i in range(0, len(arrays), batch):
        for result in model.predict(np.stack(arrays[i : i + batch])):
            tags.append({tag.name for tag in result.tags if tag.category != "rating"})
    return len(arrays) / (time.perf_counter() - t), tags


# Operators that multiply matrices, in either graph once onnxruntime has fused it.
PRODUCT_OPS = frozenset(
    {
        "MatMul",
        "Gemm",
        "FusedMatMul",
        "FusedGemm",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearMatMul",
    }
)


def op_milliseconds(model_file: Path, batch: np.ndarray, runs: int = 2) -> dict[str, float]:
    """Kernel ms per batch by operator type, from onnxruntime's profiler (warm-up excluded)."""
    import json
    import os

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the loop
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = onnxruntime.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        (model_input,) = session.get_inputs()
        if model_input.type == "tensor(float)":
            batch = batch.astype(np.float32)
        feed = {model_input.name: batch}
        for _ in range(runs + 1):
            session.run(None, feed)
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events if e["name"] == "model_run"]
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if any(start <= e["ts"] <= end for start, end in windows[-runs:]):
            op = e["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + e["dur"] / 1000 / runs
    return totals


def cpu_int8_note() -> str:
    """Whether this CPU has the int8 dot-product instructions onnxruntime's kernels use."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "CPU features unknown"
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    if vnni:
        return f"CPU has {', '.join(vnni)}: int8 dot products in one instruction"
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (
        f"CPU: {simd} without VNNI, so int8 products take two multiplies per pair of "
        "bytes (vpmaddubsw, vpmaddwd), about 2x fp32's FMAs at best"
    )


def breakdown(fp32_file: Path, int8_file: Path, batch: np.ndarray) -> None:
    """Where int8's time goes: matrix products against everything else, fp32 beside it."""
    fp, q = op_milliseconds(fp32_file, batch), op_milliseconds(int8_file, batch)

    def split(times: dict[str, float]) -> tuple[float, float]:
        products = sum(v for k, v in times.items() if k in PRODUCT_OPS)
        return products, sum(times.values()) - products

    fp_mm, fp_rest = split(fp)
    q_mm, q_rest = split(q)
    print(f"onnxruntime profile, batch {len(batch)}, kernel ms per batch:")
    print(
        f"  matrix products:  fp32 {fp_mm:7.0f}, int8 {q_mm:7.0f} ({fp_mm / q_mm:.2f}x, "
        "activation quantisation included)"
    )
    print(
        f"  everything else:  fp32 {fp_rest:7.0f}, int8 {q_rest:7.0f} ({fp_rest / q_rest:.2f}x; "
        f"{q_rest / (q_mm + q_rest):.0%} of int8's time)"
    )
    slowest = sorted(((v, k) for k, v in q.items() if k not in PRODUCT_OPS), reverse=True)[:4]
    print("  largest of the rest in int8: " + ", ".join(f"{k} {v:.0f}" for v, k in slowest))
    fp_total = fp_mm + fp_rest
    print(
        f"  whole model {fp_total / (q_mm + q_rest):.2f}x; with these product kernels int8 "
        f"reaches {fp_total / (q_mm + fp_rest / 2):.2f}x only if everything else ran twice "
        f"as fast, {fp_total / q_mm:.2f}x if it took no time"
    )
    print(f"  {cpu_int8_note()}")


def end_to_end(model, images: Path, db: Path, batch: int) -> float:
    from curator.ingest.scan import ScanOptions, scan
    from curator.runs.loop import RunOptions, run_models
    from db import open_catalog

    with open_catalog(str(db)) as cat:
        scan(cat, [images], ScanOptions())
        model.load()
        opts = RunOptions(batch_size=batch, redo=True)
        (summary,) = run_models(cat, [model], opts)
    return summary.images_per_second


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--tags", type=int, default=10_861)
    ap.add_argument("--arch", default="convnext_tiny")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, help="keep the model and images here between runs")
    ap.add_argument("--writer-only", action="store_true", help="only the writer's rows/s")
    ap.add_argument("--writer-images", type=int, default=80)
    ap.add_argument("--writer-tags", type=int, default=9000)
    ap.add_argument("--kohya", type=Path, help="a kohya sd-scripts checkout: compare with it")
    ap.add_argument("--kohya-images", type=int, default=30)
    ap.add_argument("--kohya-batch", type=int, default=4)
    args = ap.parse_args()
    if args.writer_only:
        writer(args.writer_images, args.writer_tags, args.batch_size)
        return

    from taggers.factory import load_model

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        model_dir = work / f"{args.arch}-{args.size}"
        if not (model_dir / "model.onnx").exists():
            t = time.perf_counter()
            build_model(model_dir, args.arch, args.size, args.tags)
            took = time.perf_counter() - t
            print(f"exported {args.arch} at {args.size}px, {args.tags} tags in {took:.0f}s")
        if args.kohya:
            kohya_side_by_side(args, model_dir, work)
            return
        images = work / f"images-{args.images}"
        if not images.exists():
            make_images(images, args.images)
        paths = sorted(str(p) for p in images.glob("*.jpg"))
        print(f"{len(paths)} JPEGs of 768-1600 px; batch size {args.batch_size}")
        labels = ("fp32", "int8")
        quantize = {"fp32": None, "int8": "int8"}
        models = {
            label: load_model(str(model_dir), models_dir=work / "models", quantize=quantize[label])
            for label in labels
        }
        mos: dict[str, list[float]] = {label: [] for label in labels}
        e2es: dict[str, list[float]] = {label: [] for label in labels}
        tag_sets = []
        # Alternating order, medians: the machine is shared, so no order is favoured
        # and one disturbed repeat does not decide the figure.
        for r in range(args.repeats):
            for label in labels if r % 2 == 0 else reversed(labels):
                speed, tags = model_only(models[label], paths, args.batch_size)
                mos[label].append(speed)
                e2e = end_to_end(models[label], images, work / f"{label}.db", args.batch_size)
                e2es[label].append(e2e)
                if r == 0:
                    tag_sets.append((label, tags))
        rows = []
        for label in labels:
            mo, e2e = statistics.median(mos[label]), statistics.median(e2es[label])
            rows.append((label, mo, e2e))
            print(
                f"{label}: model-only {mo:.2f} img/s, end-to-end {e2e:.2f} img/s, "
                f"ratio {e2e / mo:.2f} (medians of {args.repeats})"
            )
        tag_sets = [tags for _, tags in sorted(tag_sets, key=lambda t: labels.index(t[0]))]
        (_, fp_mo, fp_e2e), (_, q_mo, q_e2e) = rows
        print(
            f"int8 / fp32: model-only {q_mo / fp_mo:.2f}x (target >= 1.8x), "
            f"end-to-end {q_e2e / fp_e2e:.2f}x"
        )
        print(f"int8 end-to-end / int8 model-only: {q_e2e / q_mo:.2f} (target >= 0.9)")
        from curator.runs.loop import decode

        fp32 = models["fp32"]
        arrays = np.stack(
            [fp32.preprocess(decode(p, fp32.input_size)) for p in paths[: args.batch_size]]
        )
        breakdown(fp32.model_path, models["int8"].model_path, fp32.to_input(arrays))
        fp_tags, q_tags = tag_sets
        shared = sum(len(a & b) for a, b in zip(fp_tags, q_tags, strict=True))
        fp_total, q_total = sum(map(len, fp_tags)), sum(map(len, q_tags))
        print(
            f"tags above threshold: fp32 {fp_total}, int8 {q_total}, shared {shared} "
            f"({shared / max(fp_total, 1):.1%} of fp32's)"
        )
    writer(args.writer_images, args.writer_tags, args.batch_size)


def writer(n_images: int, n_tags: int, batch: int) -> None:
    """Rows/s of the run loop's batch writer for a model with `n_tags` tags per image."""
    from sqlalchemy import insert

    from curator.runs.writer import write_batch
    from db import open_catalog
    from db.schema import Image
    from taggers.base import Result, Tag

    class ManyTags:
        name, kind, revision = "many-tags", "tagger", "bench"

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, open_catalog(str(Path(tmp) / "w.db")) as cat:
        with cat.write() as s:
            rows = [
                {
                    "sha256": f"{i:064x}",
                    "bytes": 1,
                    "width": 1,
                    "height": 1,
                    "format": "PNG",
                    "mode": "RGB",
                }
                for i in range(n_images)
            ]
            s.execute(insert(Image.__table__), rows)
        ids = list(range(1, n_images + 1))
        names = [f"tag_{j}" for j in range(n_tags)]
        results = {
            i: Result(
                tags=[
                    Tag(n, "general", float(v))
                    for n, v in zip(names, rng.random(n_tags), strict=True)
                ]
            )
            for i in ids
        }
        from curator.runs.writer import Item

        model = ManyTags()
        t = time.perf_counter()
        for start in range(0, n_images, batch):
            items = [Item(0, i, results[i]) for i in ids[start : start + batch]]
            with cat.write() as s:
                write_batch(s, [model], [None], items, [], max_tags=n_tags)
        took = time.perf_counter() - t
    total = n_images * n_tags
    print(
        f"writer: {n_images} images x {n_tags} tags = {total} rows in {took:.1f}s, "
        f"{total / took:,.0f} rows/s (batch {batch})"
    )


if __name__ == "__main__":
    main()
