"""`curator stats` and `curator ls`."""

from __future__ import annotations

import click
from sqlalchemy import select

from curator.catalog.stats import catalog_stats
from curator.cli.context import AppContext, emit_json, json_option, pass_app
from curator.query.compile import compile_query, page_ids
from db.schema import File, Image, Run


@click.command("stats")
@json_option
@pass_app
def stats_cmd(app: AppContext, as_json: bool) -> None:
    """Counts of images, files, formats, sizes, aspect ratios, problems and runs."""
    stats = catalog_stats(app.catalog)
    if as_json:
        emit_json(stats)
        return
    click.echo(f"images: {stats['images']} ({stats['bytes'] / 1e6:.1f} MB)")
    click.echo(f"files: {stats['files_present']} present, {stats['files_missing']} missing")
    for title, key in [
        ("formats", "formats"),
        ("short side", "short_side"),
        ("aspect", "aspect"),
        ("problems", "problems"),
        ("runs", "runs"),
    ]:
        items = stats[key]
        click.echo(f"{title}:" + ("" if items else " none"))
        width = max((len(str(k)) for k in items), default=0)
        peak = max(items.values(), default=0) or 1
        for name, count in items.items():
            bar = "#" * round(30 * count / peak)
            click.echo(f"  {name:<{width}}  {count:>7}  {bar}")


@click.command("ls", context_settings={"ignore_unknown_options": True})
@click.argument("query", nargs=-1)
@click.option("--missing", is_flag=True, help="List files no longer on disk instead.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    help="Only the first N matching images, in catalog order (fast on any catalog size).",
)
@click.option(
    "--after", type=click.IntRange(0), default=0, help="With --limit: images after this id."
)
@json_option
@pass_app
def ls_cmd(
    app: AppContext,
    query: tuple[str, ...],
    missing: bool,
    limit: int | None,
    after: int,
    as_json: bool,
) -> None:
    """Print the paths of images matching QUERY (e.g. `folder:cats/ width>=768 format:png`).

    A word starting with `-` negates: `curator ls cat -dog`. Quote terms the shell
    would read, such as `'width>=768'`. With --limit, pages go by image id:
    `--after` the last id printed (see --json) gives the next page.
    """
    text = " ".join(query)
    stmt = (
        select(File.path, Image.id, Image.sha256, Image.width, Image.height, Image.format)
        .join(Image, File.image_id == Image.id)
        .where(File.present.is_(not missing))
    )
    with app.catalog.session() as s:
        if limit is None:
            stmt = stmt.where(compile_query(text)).order_by(File.path)
        else:
            ids = page_ids(s, text, limit=limit, after_id=after)
            stmt = stmt.where(Image.id.in_(ids)).order_by(Image.id, File.path)
        rows = s.execute(stmt).all()
    if as_json:
        emit_json([r._asdict() for r in rows])
        return
    for row in rows:
        click.echo(row.path)


@click.command("runs")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@json_option
@pass_app
def runs_cmd(app: AppContext, limit: int, as_json: bool) -> None:
    """Recent runs (scans, taggers, detectors): model, revision, status, counts, duration.

    A run still `running` with no process behind it was killed; its finished batches
    are kept and the next run of the same model picks up the rest.
    """
    with app.catalog.session() as s:
        rows = s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)).all()
    data = [
        {
            "id": r.id,
            "kind": r.kind,
            "model": r.model,
            "revision": r.revision,
            "status": r.status,
            "started_at": r.started_at,
            "duration_s": r.duration_s,
            "counts": r.counts,
            "params": r.params,
        }
        for r in rows
    ]
    if as_json:
        emit_json(data)
        return
    for r in data:
        took = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "-"
        counts = ", ".join(
            f"{k} {v}" for k, v in (r["counts"] or {}).items() if v and isinstance(v, int)
        )
        model = f" {r['model']}@{r['revision']}" if r["model"] else ""
        click.echo(f"#{r['id']} {r['kind']}{model} {r['status']} {took} {counts}")


def register(main: click.Group) -> None:
    main.add_command(stats_cmd)
    main.add_command(ls_cmd)
    main.add_command(runs_cmd)
