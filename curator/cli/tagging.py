"""`curator tag`, `curator detect`, `curator models ...`, `curator tags show|top`."""

from __future__ import annotations

from pathlib import Path

import click

from curator.catalog.imageinfo import top_tags
from curator.cli import FullHelpGroup
from curator.cli.context import (
    AppContext,
    Int64Range,
    edit_output,
    emit_json,
    escape_path,
    json_option,
    pass_app,
    quiet_option,
    say,
)
from curator.cli.progress import RichReporter
from curator.errors import UsageError
from curator.runs.loop import RunOptions, RunSummary, run_models
from curator.runs.writer import DEFAULT_MAX_TAGS

DEFAULT_TAGGER = "wd-vit-tagger-v3"
ENGINE, ADDRESS = "curator.engine", "curator.address"


def _remember_engine(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if value == "ray":
        # Before any model is looked up or downloaded.
        from curator.runs.ray_engine import require_ray

        require_ray()
    ctx.meta[ENGINE] = value
    return value


def _remember_address(ctx: click.Context, _param: click.Parameter, value: str | None):  # noqa: ANN202
    if value is not None and ctx.meta.get(ENGINE) != "ray":
        raise UsageError("--address names a Ray cluster: use it with --engine ray")
    ctx.meta[ADDRESS] = value
    return value


def run_options(f):
    options = [
        click.option("--where", metavar="QUERY", help="Only images matching QUERY."),
        click.option("--redo", is_flag=True, help="Also redo images this model revision has done."),
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=8,
            show_default=True,
            help="Images per model call.",
        ),
        click.option(
            "--workers",
            type=Int64Range(0, 1024),
            help="Decoding processes [default: one less than the cores; this one predicts]; "
            "0 works in this process. With --engine ray: model workers [default: one per "
            "GPU, else one per two CPUs].",
        ),
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            is_eager=True,
            expose_value=False,
            callback=_remember_engine,
            help="local: this machine, a decode pool and one model; ray: a Ray cluster, "
            "decoding as tasks and a pool of model workers (the ray extra).",
        ),
        click.option(
            "--address",
            metavar="ADDR",
            expose_value=False,
            callback=_remember_address,
            help="With --engine ray: the cluster to join (HOST:6379, ray://HOST:10001 or "
            "auto) [default: $RAY_ADDRESS, else Ray started on this machine].",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto, cpu, cuda, tensorrt, coreml or directml.",
        ),
        click.option("--threads", type=click.IntRange(1), help="Inference threads per model."),
        click.option(
            "--limit", type=click.IntRange(1), help="Stop after this many images (resumable)."
        ),
        quiet_option,
        json_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def report_runs(summaries: list[RunSummary], as_json: bool) -> None:
    if as_json:
        emit_json([s.as_dict() for s in summaries])
        return
    for s in summaries:
        nonfinite = f", {s.nonfinite} NaN values not stored" if s.nonfinite else ""
        click.echo(
            f"{s.model} ({s.revision}): {s.done} images in {s.seconds:.1f}s "
            f"({s.images_per_second:.1f}/s), {s.tags} tags, {s.failed} failed, "
            f"{s.skipped} already done{nonfinite}"
        )


def run_options_from(where, redo, batch_size, workers, limit, quiet, as_json) -> RunOptions:
    ctx = click.get_current_context()
    return RunOptions(
        where=where,
        redo=redo,
        batch_size=batch_size,
        workers=workers,
        limit=limit,
        reporter=RichReporter(not (quiet or as_json)),
        engine=ctx.meta.get(ENGINE, "local"),
        address=ctx.meta.get(ADDRESS),
        # --device cpu keeps Ray model workers off the cluster's GPUs.
        worker_gpus=0.0 if ctx.params.get("device") == "cpu" else None,
    )


@click.command("tag")
@click.option(
    "--model",
    "-m",
    "specs",
    multiple=True,
    metavar="NAME|DIR|FILE.onnx",
    help=f"Tagger preset, folder or .onnx file; repeat to run several [default: {DEFAULT_TAGGER}].",
)
@click.option("--general-threshold", type=click.FloatRange(0, 1), help="WD14 [default 0.35].")
@click.option("--character-threshold", type=click.FloatRange(0, 1), help="WD14 [default 0.85].")
@click.option("--mcut", is_flag=True, default=None, help="WD14: MCut automatic thresholds.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="DeepDanbooru [default 0.5].")
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    help="Run a cached int8 copy (MatMul/Gemm layers with signed int8 weights).",
)
@click.option(
    "--max-tags",
    type=click.IntRange(1),
    default=DEFAULT_MAX_TAGS,
    show_default=True,
    help="Keep at most this many tags per image (the highest scores).",
)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@run_options
@pass_app
def tag_cmd(
    app: AppContext,
    paths,
    specs,
    general_threshold,
    character_threshold,
    mcut,
    threshold,
    quantize,
    max_tags,
    where,
    redo,
    batch_size,
    workers,
    device,
    threads,
    limit,
    quiet,
    as_json,
):
    """Tag images with WD14 / DeepDanbooru taggers (resumable; each image decoded once).

    Without PATHS, tags the catalog's images. With PATHS (folders or files), tags only
    the images there, cataloguing new files on the way: each is read and decoded once
    for both (like `curator scan PATHS` then `curator tag`, in one pass).

    \b
    Examples:
      curator tag                                  # the default WD14 tagger
      curator tag ./new-photos/                    # catalog and tag a folder
      curator tag -m wd-eva02-large-tagger-v3 --mcut
      curator tag -m ./my-tagger/ --where 'folder:new/' --device cuda
    """
    from taggers.factory import load_model

    # Unset options are dropped by load_model; one the model does not take is refused
    # there with the list it does take, whatever kind of tagger the spec resolves to.
    options = {
        "general_threshold": general_threshold,
        "character_threshold": character_threshold,
        "mcut": mcut,
        "threshold": threshold,
    }
    models = [
        load_model(spec, device=device, threads=threads, quantize=quantize, **options)
        for spec in specs or (DEFAULT_TAGGER,)
    ]
    opts = run_options_from(where, redo, batch_size, workers, limit, quiet, as_json)
    opts.max_tags = max_tags
    report_runs(run_on(app, paths, models, opts, kind="tag"), as_json)


def run_on(app: AppContext, paths, models, opts: RunOptions, *, kind: str) -> list[RunSummary]:
    """`run_models` over the catalog, or over PATHS with their new files scanned on the way."""
    if not paths:
        return run_models(app.catalog, models, opts, kind=kind)
    from curator.runs.scan_run import scan_and_run

    return scan_and_run(app.catalog, paths, models, opts, kind=kind)[1]


@click.command("detect")
@click.argument("detectors", nargs=-1, required=True, type=click.Choice(["nsfw", "text", "faces"]))
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Only images in this folder or file, cataloguing new files on the way (each "
    "read once for both); repeatable.",
)
@run_options
@pass_app
def detect_cmd(
    app: AppContext,
    detectors,
    paths,
    where,
    redo,
    batch_size,
    workers,
    device,
    threads,
    limit,
    quiet,
    as_json,
):
    """Run bundled detectors: NSFW (nudenet), text/watermarks (PP-OCR), faces (OpenCV).

    Results are stored as scores (`nsfw`, `text_area`, `faces`) and boxes, usable in
    queries (`score(nsfw)<0.2`, `has:faces`) and by export's focal crops.
    """
    from taggers.factory import load_model

    models = [load_model(d, device=device, threads=threads) for d in dict.fromkeys(detectors)]
    opts = run_options_from(where, redo, batch_size, workers, limit, quiet, as_json)
    report_runs(run_on(app, paths, models, opts, kind="detect"), as_json)


@click.group("models", cls=FullHelpGroup)
def models_group() -> None:
    """Tagger presets, imported models and bundled detectors, and which are available."""


@models_group.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """Show the presets, imported models and bundled detectors, and which are available."""
    from taggers.registry import (
        available_locally,
        default_models_dir,
        list_detectors,
        list_presets,
    )

    models_dir = default_models_dir()
    presets = list_presets()
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "source": f"{p.repo} ({', '.join(p.files)})",
            "available": available_locally(p, models_dir),
            "description": p.description,
        }
        for p in presets
    ]
    rows += _imported_models(models_dir, {p.name for p in presets})
    rows += [
        {
            "name": d.name,
            "kind": "detector",
            "source": f"bundled with {d.pip_name}",
            "available": _importable(d.package),
            "description": d.description,
        }
        for d in list_detectors()
    ]
    if as_json:
        emit_json({"models_dir": str(models_dir), "models": rows})
        return
    click.echo(f"models folder: {models_dir}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "available" if r["available"] else "missing  "
        click.echo(f"{r['name']:<{width}}  {mark}  {r['kind']:<12}  {r['source']}")


def _imported_models(models_dir: Path, presets: set[str]) -> list[dict]:
    """Models `curator models import` copied in under a name that is not a preset's."""
    from taggers.registry import inspect_dir

    rows = []
    if not models_dir.is_dir():
        return rows
    for folder in sorted(models_dir.iterdir()):
        if folder.name.startswith(".") or folder.name in presets or not folder.is_dir():
            continue
        try:
            found = inspect_dir(folder)
        except Exception as exc:  # a folder the loader would refuse: say why
            rows.append(_imported_row(folder, "unusable", False, str(exc)))
            continue
        if found is not None:
            kind, model_file, _tags = found
            rows.append(_imported_row(folder, kind, True, f"imported ({model_file.name})"))
    return rows


def _imported_row(folder: Path, kind: str, available: bool, source: str) -> dict:
    return {
        "name": folder.name,
        "kind": kind,
        "source": source if available else f"imported, unusable: {source}",
        "available": available,
        "description": f"imported into {folder}",
    }


def _importable(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


@models_group.command("import")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Name to use it by, e.g. a preset name.")
@click.option("--overwrite", is_flag=True, help="Replace a model already imported as NAME.")
@edit_output
def models_import(src: Path, name: str, overwrite: bool, as_json: bool) -> None:
    """Copy a downloaded model folder (model.onnx + selected_tags.csv) into the models folder."""
    from taggers.registry import default_models_dir, import_model

    target = import_model(src, name=name, models_dir=default_models_dir(), overwrite=overwrite)
    if as_json:
        emit_json({"name": name, "path": str(target)})
    else:
        say(f"imported {name} into {target}")


@click.command("show")
@click.argument("image")
@json_option
@pass_app
def tags_show(app: AppContext, image: str, as_json: bool) -> None:
    """Everything known about one image: IMAGE is a path, a sha256 prefix (4+) or an id."""

    from curator.catalog.imageinfo import show_image

    report = show_image(app.catalog, image)
    if as_json:
        emit_json(report)
        return
    for line in image_report_lines(report):
        click.echo(line)


def image_report_lines(report: dict) -> list[str]:
    """`tags show` as text: every field the JSON has, tags first."""
    shown = report["path"] if report["path"] is not None else f"image {report['id']}"
    lines = [
        f"{escape_path(shown)}  {report['width']}x{report['height']} {report['format']} "
        f"{report['mode']}",
        f"id {report['id']}  sha256 {report['sha256']}  status {report['status']}"
        + (f"  duplicate of {report['duplicate_of']}" if report["duplicate_of"] else ""),
    ]
    for f in report["files"][1:] if len(report["files"]) > 1 else []:
        lines.append(f"also at {escape_path(f['path'])}" + ("" if f["present"] else " (missing)"))
    if report["files"] and not any(f["present"] for f in report["files"]):
        lines.append("no file of this image is on disk any more")
    if not report["tags"]:
        lines.append("tags: none")
    for t in report["tags"]:
        score = f"{t['score']:.3f}" if t["score"] is not None else "  -  "
        lines.append(f"  {score}  {t['category']:<10} {t['name']}  [{', '.join(t['sources'])}]")
    for name, value in sorted(report["scores"].items()):
        lines.append(f"  score {name} = {value:.4g}")
    for d in report["detections"]:
        text = f" {d['text']!r}" if d["text"] else ""
        lines.append(f"  {d['detector']}: {d['label']} {d['score']:.2f} at {d['box']}{text}")
    for c in report["captions"]:
        lines.append(f"  caption ({c['kind']}, {c['source']}): {c['text']}")
    gen = report.get("generation")
    if gen:
        lines.append("generation:")
        for key, value in gen.items():
            if value not in (None, ""):
                lines.append(f"  {key}: {value}")
    return lines


@click.command("top")
@click.option("--category", help="general, character, rating, copyright, artist or meta.")
@click.option("--where", metavar="QUERY", help="Only images matching QUERY.")
@click.option(
    "--limit",
    type=Int64Range(1),
    default=50,
    show_default=True,
    help="How many tags to list, most frequent first.",
)
@json_option
@pass_app
def tags_top(app: AppContext, category, where, limit, as_json) -> None:
    """The most frequent tags (images per tag)."""
    with app.catalog.session() as s:
        rows = top_tags(s, category=category, where=where, limit=limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no tags" + (f" on images matching {where!r}" if where else ""))
    for r in rows:
        click.echo(f"{r['images']:>8}  {r['category']:<10} {r['name']}")


def register(main: click.Group) -> None:
    main.add_command(tag_cmd)
    main.add_command(detect_cmd)
    main.add_command(models_group)
    try:
        from curator.cli.curate import tags_group
    except ImportError:  # pragma: no cover - the curation commands define the group
        tags_group = click.Group("tags", help="Show and edit tags.")
        main.add_command(tags_group)
    tags_group.add_command(tags_show)
    tags_group.add_command(tags_top)
