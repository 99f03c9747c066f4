"""Curation commands: `curator tags ...`, `history`, `undo`, `accept|reject|unreview`,
`dedup` and `quality`. Each is one call into curator.curation.edits / review / dedup / quality_run.
"""

from __future__ import annotations

import re

import click

from curator.cli import FullHelpGroup
from curator.cli.context import (
    AppContext,
    Int64Range,
    edit_output,
    emit_json,
    json_option,
    pass_app,
    quiet_option,
    say,
    workers_option,
)
from curator.cli.progress import RichReporter
from curator.curation import dedup as dedup_lib
from curator.curation import edits, review
from curator.curation.edits import EditResult
from curator.errors import UsageError
from curator.runs.quality_run import compute_quality, quality_table
from curator.tags import rules as tagrules
from curator.tags.rules import BLACKLIST, RULE_KINDS, TRIGGER

QUERY_HELP = (
    "QUERY selects images and is ONE argument: quote it in the shell, e.g. "
    "'folder:cats/ width>=512' (an empty '' selects every image). A QUERY that starts "
    "with a negated term goes after `--`, e.g. curator reject -- '-has:tags'."
)
# A word that reads as a query term: a forgotten pair of quotes around QUERY.
_QUERY_TERM = re.compile(
    r"^-?(folder|format|status|rating|aspect|is|has|source|caption|prompt|negative|sampler"
    r"|model|model_hash)[:~]"
    r"|^-?(width|height|bytes|aspect|steps|cfg|seed|clip_skip|denoise|score\(\w+\))"
    r"(>=|<=|!=|=|>|<)"
)


def _report(result: EditResult, as_json: bool) -> None:
    if as_json:
        emit_json(result.as_dict())
    elif result.edit_id is None:
        say(f"nothing to change: {result.summary}")
    else:
        say(f"{result.summary} (edit {result.edit_id}; `curator undo` reverts it)")


def _check_tags(tags: tuple[str, ...]) -> None:
    for tag in tags:
        if _QUERY_TERM.match(tag):
            raise UsageError(
                f"{tag!r} looks like part of the query; quote the whole QUERY as one "
                "argument, e.g. curator tags add 'folder:cats/ width>=512' cat"
            )


# --- tags ------------------------------------------------------------------------------

tags_group = FullHelpGroup(
    "tags",
    help=(
        "Show and edit tags: add, remove, rename, replace, alias, imply, prune, "
        "blacklist, trigger words. Every edit is undoable (`curator history`, `curator undo`)."
    ),
)


@tags_group.command("add", epilog=QUERY_HELP)
@click.argument("query")
@click.argument("tags", nargs=-1, required=True)
@edit_output
@pass_app
def tags_add(app: AppContext, query: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Add TAGS to every image QUERY selects, as tags set by hand.

    \b
    Example: curator tags add 'folder:cats/ format:png' cat "sitting cat"
    Spaces become underscores (sitting_cat); aliases are written as their canonical tag.
    """
    _check_tags(tags)
    _report(edits.add_tags(app.catalog, query, tags), as_json)


@tags_group.command("remove", epilog=QUERY_HELP)
@click.argument("query")
@click.argument("tags", nargs=-1, required=True)
@edit_output
@pass_app
def tags_remove(app: AppContext, query: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Remove TAGS from every image QUERY selects.

    \b
    Example: curator tags remove 'folder:cats/' watermark
    A tag a model or sidecar gave stays hidden, even after the model runs again.
    """
    _check_tags(tags)
    _report(edits.remove_tags(app.catalog, query, tags), as_json)


@tags_group.command("rename")
@click.argument("old")
@click.argument("new")
@edit_output
@pass_app
def tags_rename(app: AppContext, old: str, new: str, as_json: bool) -> None:
    """Rename tag OLD to NEW on every image, whatever set it.

    A one-off rewrite: a model that writes OLD again brings it back; use
    `curator tags alias OLD NEW` to make the spelling permanent.
    """
    _report(edits.rename_tag(app.catalog, old, new), as_json)


@tags_group.command("replace", epilog=QUERY_HELP)
@click.argument("query")
@click.argument("old")
@click.argument("new")
@edit_output
@pass_app
def tags_replace(app: AppContext, query: str, old: str, new: str, as_json: bool) -> None:
    """On images QUERY selects that have OLD: remove OLD and add NEW.

    \b
    Example: curator tags replace 'folder:set2/' dog wolf
    """
    _report(edits.replace_tags(app.catalog, query, old, new), as_json)


@tags_group.command("alias")
@click.argument("old")
@click.argument("canonical")
@edit_output
@pass_app
def tags_alias(app: AppContext, old: str, canonical: str, as_json: bool) -> None:
    """Make OLD another spelling of CANONICAL: rewrite existing OLD tags and write
    CANONICAL from now on (models' OLD tags read as CANONICAL)."""
    _report(tagrules.add_alias(app.catalog, old, canonical), as_json)


@tags_group.command("unalias")
@click.argument("old")
@edit_output
@pass_app
def tags_unalias(app: AppContext, old: str, as_json: bool) -> None:
    """Forget the alias OLD (tags already rewritten keep the canonical name)."""
    _report(tagrules.remove_alias(app.catalog, old), as_json)


@tags_group.command("imply")
@click.argument("tag")
@click.argument("implied")
@edit_output
@pass_app
def tags_imply(app: AppContext, tag: str, implied: str, as_json: bool) -> None:
    """Images with TAG also get IMPLIED in exports and the effective view.

    \b
    Example: curator tags imply long_hair hair
    Computed, not stored: removing TAG from an image takes IMPLIED with it.
    """
    _report(tagrules.add_implication(app.catalog, tag, implied), as_json)


@tags_group.command("unimply")
@click.argument("tag")
@click.argument("implied")
@edit_output
@pass_app
def tags_unimply(app: AppContext, tag: str, implied: str, as_json: bool) -> None:
    """Drop the rule that TAG implies IMPLIED."""
    _report(tagrules.remove_implication(app.catalog, tag, implied), as_json)


@tags_group.command("prune", epilog=QUERY_HELP)
@click.argument("query", required=False, default="")
@click.option(
    "--subset",
    is_flag=True,
    help="Also prune tags whose words appear anywhere in another tag (hair by hair_ornament).",
)
@edit_output
@pass_app
def tags_prune(app: AppContext, query: str, subset: bool, as_json: bool) -> None:
    """Remove general tags a more specific tag on the same image contains.

    \b
    hair beside long_hair, shirt beside white_shirt, long_hair beside very_long_hair.
    Example: curator tags prune 'folder:cats/'   (no QUERY: every image)
    """
    _report(tagrules.prune_tags(app.catalog, query, subset=subset), as_json)


@tags_group.command("rules")
@click.option("--kind", type=click.Choice(RULE_KINDS), help="Only rules of this kind.")
@json_option
@pass_app
def tags_rules(app: AppContext, kind: str | None, as_json: bool) -> None:
    """List aliases, implications, the blacklist and trigger words."""
    rows = tagrules.list_rules(app.catalog, kind)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no rules")
    arrows = {"alias": "→ spelled", "implication": "implies"}
    for r in rows:
        target = f" {arrows.get(r['kind'], '')} {r['target']}" if r["target"] else ""
        click.echo(f"{r['kind']:<12} {r['tag']}{target}")


def _word_list_group(name: str, kind: str, help_text: str, add, remove) -> click.Group:  # noqa: ANN001
    group = click.Group(name, help=help_text)

    @group.command("add")
    @click.argument("words", nargs=-1, required=True)
    @edit_output
    @pass_app
    def add_cmd(app: AppContext, words: tuple[str, ...], as_json: bool) -> None:
        """Add WORDS."""
        _report(add(app.catalog, words), as_json)

    @group.command("remove")
    @click.argument("words", nargs=-1, required=True)
    @edit_output
    @pass_app
    def remove_cmd(app: AppContext, words: tuple[str, ...], as_json: bool) -> None:
        """Remove WORDS."""
        _report(remove(app.catalog, words), as_json)

    @group.command("list")
    @json_option
    @pass_app
    def list_cmd(app: AppContext, as_json: bool) -> None:
        """List them, in the order added."""
        words = [r["tag"] for r in tagrules.list_rules(app.catalog, kind)]
        if as_json:
            emit_json(words)
        else:
            click.echo("\n".join(words) if words else "none")

    return group


tags_group.add_command(
    _word_list_group(
        "blacklist",
        BLACKLIST,
        "Tags that never appear in effective tags or exports (their rows are kept).",
        tagrules.blacklist_add,
        tagrules.blacklist_remove,
    )
)
tags_group.add_command(
    _word_list_group(
        "trigger",
        TRIGGER,
        "Trigger words (e.g. sks) that exports put first in every caption.",
        tagrules.trigger_add,
        tagrules.trigger_remove,
    )
)


# --- history and undo ------------------------------------------------------------------


@click.command("history")
@click.option(
    "--limit",
    type=Int64Range(1),
    default=20,
    show_default=True,
    help="How many edits to list, newest first.",
)
@click.option("--mine", is_flag=True, help="Only edits made by this user on this host.")
@json_option
@pass_app
def history_cmd(app: AppContext, limit: int, mine: bool, as_json: bool) -> None:
    """List recent edits (tags, rules, review, dedup), newest first, with who made them."""
    rows = edits.history(app.catalog, limit, author=edits.Author.current() if mine else None)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no edits")
    for r in rows:
        mark = " (undone)" if r["undone"] else ""
        who = f"{r['user']}@{r['host']}" if r["user"] else "-"
        click.echo(f"{r['id']:>5}  {r['at']}  {who:<20} {r['op']:<16} {r['summary']}{mark}")


_edit_option = click.option(
    "--edit",
    "edit_id",
    type=Int64Range(1),
    metavar="ID",
    help="This edit (an id from `curator history`), whoever made it.",
)
_any_user_option = click.option(
    "--any-user",
    is_flag=True,
    help="The newest edit of anyone, not only of this user on this host.",
)


@click.command("undo")
@click.argument("count", type=Int64Range(1), default=1, required=False)
@_edit_option
@_any_user_option
@edit_output
@pass_app
def undo_cmd(
    app: AppContext, count: int, edit_id: int | None, any_user: bool, as_json: bool
) -> None:
    """Undo your last COUNT edits (default 1) not yet undone, newest first.

    Edits made by other users (or on other hosts) are left alone unless --any-user.
    An edit that a later edit still in effect depends on is refused, naming that edit.
    """
    if edit_id is not None and count != 1:
        raise UsageError("give COUNT or --edit, not both")
    rows = edits.undo(app.catalog, count, edit_id=edit_id, any_user=any_user)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        say("nothing to undo" + ("" if any_user else " of yours (--any-user: anyone's)"))
    for r in rows:
        say(f"undid edit {r['id']}: {r['summary']}")


@click.command("redo")
@_edit_option
@_any_user_option
@edit_output
@pass_app
def redo_cmd(app: AppContext, edit_id: int | None, any_user: bool, as_json: bool) -> None:
    """Apply again the edit you undid most recently (or --edit ID)."""
    rows = edits.redo(app.catalog, edit_id=edit_id, any_user=any_user)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        say("nothing to redo")
    for r in rows:
        say(f"redid edit {r['id']}: {r['summary']}")


# --- review ----------------------------------------------------------------------------


def _review_command(name: str, status: str, doc: str) -> click.Command:
    @click.command(name, help=doc, epilog=QUERY_HELP)
    @click.argument("query")
    @edit_output
    @pass_app
    def command(app: AppContext, query: str, as_json: bool) -> None:
        _report(review.set_status(app.catalog, query, status), as_json)

    return command


accept_cmd = _review_command(
    "accept",
    review.ACCEPTED,
    "Mark the images QUERY selects as accepted.\n\n"
    "Example: curator accept 'folder:keep/ width>=768'",
)
reject_cmd = _review_command(
    "reject",
    review.REJECTED,
    "Mark the images QUERY selects as rejected.\n\nExample: curator reject 'width<512'",
)
unreview_cmd = _review_command(
    "unreview",
    review.PENDING,
    "Put the images QUERY selects back to pending review.\n\nExample: curator unreview ''",
)


# --- dedup -----------------------------------------------------------------------------


@click.command("dedup")
@click.option(
    "--method",
    default="phash",
    show_default=True,
    type=click.Choice(["exact", "phash", "clip", "all"]),
    help="exact: same bytes at several paths; phash: near copies; clip: similar embeddings.",
)
@click.option(
    "--distance",
    type=click.IntRange(0, 64),
    default=dedup_lib.DEFAULT_DISTANCE,
    show_default=True,
    help="phash: most differing bits for a near copy.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=dedup_lib.DEFAULT_THRESHOLD,
    show_default=True,
    help="clip: least cosine similarity for a duplicate.",
)
@click.option("--model", help="clip: the embedding model [default: the one with most images].")
@click.option("--where", "query", default="", metavar="QUERY", help="Only images matching QUERY.")
@click.option("--report", is_flag=True, help="Print the groups without marking anything.")
@click.option("--clear", is_flag=True, help="Forget duplicate markings (of --where images).")
@edit_output
@pass_app
def dedup_cmd(
    app: AppContext,
    method: str,
    distance: int,
    threshold: float,
    model: str | None,
    query: str,
    report: bool,
    clear: bool,
    as_json: bool,
) -> None:
    """Find duplicates and mark all but one keeper per group (never deletes files).

    The keeper has the most pixels, then the best aesthetic score, then is the oldest.
    Marked images point at their keeper; `curator undo` or `--clear` reverts.
    """
    if clear:
        _report(dedup_lib.clear_duplicates(app.catalog, query), as_json)
        return
    kwargs = dict(distance=distance, threshold=threshold, query=query, model=model)
    if report:
        result = dedup_lib.find_duplicates(app.catalog, method, **kwargs)
    else:
        result = dedup_lib.dedup(app.catalog, method, **kwargs)
    if as_json:
        emit_json(result.as_dict())
        return
    for group in result.groups:
        _print_group(group)
    near = [g for g in result.groups if g.method != dedup_lib.EXACT]
    exact = len(result.groups) - len(near)
    dupes = sum(len(g.duplicates) for g in near)
    line = f"{len(near)} groups, {dupes} duplicates"
    if exact:
        line += f"; {exact} image{'s' if exact != 1 else ''} at several paths"
    if result.model:
        line += f"; embeddings from {result.model}"
    if not report:
        line += f"; marked {result.marked}" + (
            f" (edit {result.edit_id}; `curator undo` reverts it)" if result.edit_id else ""
        )
    say(line)


def _print_group(group: dedup_lib.DuplicateGroup) -> None:
    k = group.keeper
    if group.method == dedup_lib.EXACT:
        say(f"exact: image {k.image_id} at {len(k.paths)} paths")
        for path in k.paths:
            say(f"    {path}")
        return
    say(f"{group.method}: keep {_where(k)}  {k.width}x{k.height}")
    for m in group.duplicates:
        how = []
        if m.distance is not None:
            how.append(f"distance {m.distance}")
        if m.similarity is not None:
            how.append(f"similarity {m.similarity:.3f}")
        say(f"  dup {_where(m)}  {m.width}x{m.height}  {', '.join(how)}")


def _where(m: dedup_lib.Member) -> str:
    return m.paths[0] if m.paths else f"image {m.image_id}"


# --- quality ---------------------------------------------------------------------------


@click.command("quality")
@click.option("--where", "query", default="", metavar="QUERY", help="Only images matching QUERY.")
@click.option(
    "--aesthetic-head",
    type=click.Path(exists=True, dir_okay=False),
    help="LAION aesthetic predictor weights (.safetensors or .pth) for `aesthetic` scores.",
)
@click.option("--embedding-model", help="Embeddings to score [default: most images, right width].")
@click.option("--redo", is_flag=True, help="Measure images that already have scores again.")
@workers_option("Decoding", "one less than the cores")
@click.option("--show", is_flag=True, help="Then list each image's scores and resolution class.")
@quiet_option
@json_option
@pass_app
def quality_cmd(
    app: AppContext,
    query: str,
    aesthetic_head: str | None,
    embedding_model: str | None,
    redo: bool,
    workers: int | None,
    show: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Score sharpness, JPEG quality, megapixels (and aesthetic) for the catalog's images.

    Resumable: images that already have scores are skipped unless --redo. Scores are
    queried like `score(sharpness)>100`.
    """
    summary = compute_quality(
        app.catalog,
        query,
        aesthetic_head=aesthetic_head,
        embedding_model=embedding_model,
        redo=redo,
        workers=workers,
        reporter=RichReporter(not (quiet or as_json)),
    )
    table = quality_table(app.catalog, query) if show else None
    if as_json:
        emit_json({**summary.as_dict(), **({"images": table} if show else {})})
        return
    click.echo(
        f"quality: {summary.measured} measured, {summary.skipped} already done, "
        f"{summary.failed} failed, {summary.missing} without a file, "
        f"{summary.aesthetic} aesthetic scores in {summary.seconds:.1f}s"
    )
    classes = ", ".join(f"{k} {v}" for k, v in summary.resolution_classes.items())
    if classes:
        click.echo(f"resolution: {classes}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    if summary.failed:
        click.echo("see `curator problems --kind decode_failed`")
    for row in table or []:
        values = "  ".join(
            f"{name} {row[name]:.4g}"
            for name in ("sharpness", "jpeg_quality", "megapixels", "aesthetic")
            if row[name] is not None
        )
        click.echo(f"{row['path'] or row['image_id']}  {row['resolution_class']}  {values}")


def register(main: click.Group) -> None:
    main.add_command(tags_group)
    for command in (
        history_cmd,
        undo_cmd,
        redo_cmd,
        accept_cmd,
        reject_cmd,
        unreview_cmd,
        dedup_cmd,
        quality_cmd,
    ):
        main.add_command(command)
