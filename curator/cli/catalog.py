"""`curator stats`, `curator ls` and `curator runs`: one library call each."""

from __future__ import annotations

import sys
from typing import Any

import click

from curator.cli.context import (
    AppContext,
    Int64Range,
    emit_json,
    escape_path,
    json_option,
    pass_app,
)


@click.command("stats")
@json_option
@pass_app
def stats_cmd(app: AppContext, as_json: bool) -> None:
    """Counts of images, files, formats, sizes, aspect ratios, problems and runs."""
    from curator.catalog.stats import catalog_stats

    stats = catalog_stats(app.catalog)
    if as_json:
        emit_json(stats)
        return
    if not stats["images"] and not stats["problems"]:
        click.echo("the catalog is empty: `curator scan FOLDER` adds images")
        return
    click.echo(f"images: {stats['images']} ({stats['bytes'] / 1e6:.1f} MB)")
    click.echo(f"files: {stats['files_present']} present, {stats['files_missing']} missing")
    for title, key in [
        ("formats", "formats"),
        ("short side", "short_side"),
        ("aspect (query aspect:NAME)", "aspect"),
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


class QueryCommand(click.Command):
    """A command whose QUERY words may start with `-` (negation), yet whose unknown
    options are errors.

    Click alone either refuses `cat -dog` or, told to ignore unknown options, reads a
    mistyped `--limt 5` as query words. Here a word starting with `-` is a negated
    query term only after the query's first word (or after `--`); before it, and in
    any `--word` form, it must be one of the command's options.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in param.opts + param.secondary_opts:
                    takes_value[name] = not (param.is_flag or param.count)
        options: list[str] = []
        words: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                words.extend(args[i + 1 :])
                break
            name = arg.split("=", 1)[0]
            if name in takes_value:
                options.append(arg)
                if takes_value[name] and "=" not in arg and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            elif arg.startswith("--") or (arg.startswith("-") and len(arg) > 1 and not words):
                hint = (
                    ""
                    if arg.startswith("--")
                    else f"; a query that starts with a negated term needs `--` first: "
                    f"curator {self.name} -- {arg}"
                )
                raise click.NoSuchOption(arg, message=f"No such option: {arg}{hint}", ctx=ctx)
            else:
                words.append(arg)
            i += 1
        return super().parse_args(ctx, [*options, "--", *words])


@click.command("ls", cls=QueryCommand)
@click.argument("query", nargs=-1)
@click.option("--missing", is_flag=True, help="List files no longer on disk instead.")
@click.option(
    "--limit",
    type=Int64Range(1),
    help="Only the first N matching images, in catalog order (fast on any catalog size).",
)
@click.option(
    "--after",
    type=Int64Range(0),
    default=0,
    help="With --limit: images after this id (the last id of the previous page).",
)
@click.option(
    "--null",
    "-0",
    "null",
    is_flag=True,
    help="End each path with a NUL byte instead of a newline, as `xargs -0` reads.",
)
@json_option
@pass_app
def ls_cmd(
    app: AppContext,
    query: tuple[str, ...],
    missing: bool,
    limit: int | None,
    after: int,
    null: bool,
    as_json: bool,
) -> None:
    """Print the paths of the images a query selects.

    \b
    Examples:
      curator ls folder:cats/ 'width>=768' format:png
      curator ls cat -dog            # a word starting with - negates
      curator ls -- -dog             # ... after `--` when it comes first
    Quote terms the shell would read, such as 'width>=768'. A name holding a newline
    or other control character is printed with backslash escapes; --null prints
    names exactly. With --limit, pages go by image id: `--after` the last id
    printed (see --json) gives the next page.
    """
    from curator.catalog.listing import list_images

    rows = list_images(app.catalog, " ".join(query), missing=missing, limit=limit, after=after)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        _say_none(query, limit, after)
        return
    out = sys.stdout
    if null:
        for row in rows:
            out.write(row["path"] + "\0")
    else:
        for row in rows:
            out.write(escape_path(row["path"]) + "\n")


def _say_none(query: tuple[str, ...], limit: int | None, after: int) -> None:
    # On stderr: a script reading stdout gets no lines, a person reads why.
    what = f"query {' '.join(query)!r}" if query else "the catalog"
    more = f" after image {after}" if limit is not None and after else ""
    click.echo(f"no images in {what}{more}", err=True)


@click.command("runs")
@click.option(
    "--limit",
    type=Int64Range(1),
    default=20,
    show_default=True,
    help="How many runs to list, newest first.",
)
@json_option
@pass_app
def runs_cmd(app: AppContext, limit: int, as_json: bool) -> None:
    """Recent runs (scans, taggers, detectors): model, revision, status, counts, duration.

    A run still `running` with no process behind it was killed; its finished batches
    are kept and the next run of the same model picks up the rest.
    """
    from curator.catalog.runs import recent_runs

    data = recent_runs(app.catalog, limit)
    if as_json:
        emit_json(data)
        return
    if not data:
        click.echo("no runs yet")
    for r in data:
        click.echo(_run_line(r))


def _run_line(r: dict[str, Any]) -> str:
    took = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "-"
    counts = ", ".join(
        f"{k} {v}"
        for k, v in r["counts"].items()
        if v and isinstance(v, int) and not isinstance(v, bool)
    )
    return f"#{r['id']} {r['label']} {r['status']} {took} {counts}".rstrip()


def register(main: click.Group) -> None:
    main.add_command(stats_cmd)
    main.add_command(ls_cmd)
    main.add_command(runs_cmd)
