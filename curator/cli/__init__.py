"""The `curator` command: a thin face over the library, one module per command group.

Command modules are imported when their command runs, not at start: `curator --help`
and a quick command like `curator stats` never pay for imaging, model or export code.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from curator import __version__
from curator.cli.context import AppContext
from curator.errors import CuratorError

# Each module defines `register(main)`. COMMANDS says which module defines each
# top-level command and its one-line summary for `curator --help`, so listing them
# imports nothing; a test checks this table against the commands themselves.
COMMAND_MODULES = [
    "curator.cli.scan",
    "curator.cli.catalog",
    "curator.cli.tagging",
    "curator.cli.curate",
    "curator.cli.export",
    "curator.cli.prepare",
    "curator.cli.review",
    "curator.cli.generate",
    "curator.cli.search",
    "curator.cli.describe",
    "curator.cli.train",
    "curator.cli.db",
]
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "scan": (
        ("curator.cli.scan",),
        "Record every image under PATHS in the catalog (incremental; safe to re-run).",
    ),
    "problems": (("curator.cli.scan",), "List files that could not be catalogued, and why."),
    "stats": (
        ("curator.cli.catalog",),
        "Counts of images, files, formats, sizes, aspect ratios, problems and runs.",
    ),
    "ls": (("curator.cli.catalog",), "Print the paths of the images a query selects."),
    "runs": (
        ("curator.cli.catalog",),
        "Recent runs (scans, taggers, detectors): model, revision, status, counts, duration.",
    ),
    "tag": (
        ("curator.cli.tagging",),
        "Tag images with WD14 / DeepDanbooru taggers (resumable; each image decoded once).",
    ),
    "detect": (
        ("curator.cli.tagging",),
        "Run bundled detectors: NSFW (nudenet), text/watermarks (PP-OCR), faces (OpenCV).",
    ),
    "models": (
        ("curator.cli.tagging", "curator.cli.generate"),  # generate adds `checkpoints`
        "Tagger presets, imported models and bundled detectors, and which are available.",
    ),
    "tags": (
        ("curator.cli.curate", "curator.cli.tagging"),
        "Show and edit tags: add, remove, rename, replace, alias, imply, prune, blacklist, "
        "trigger words.",
    ),
    "history": (
        ("curator.cli.curate",),
        "List recent edits (tags, rules, review, dedup), newest first, with who made them.",
    ),
    "undo": (
        ("curator.cli.curate",),
        "Undo your last COUNT edits (default 1) not yet undone, newest first.",
    ),
    "redo": (
        ("curator.cli.curate",),
        "Apply again the edit you undid most recently (or --edit ID).",
    ),
    "accept": (("curator.cli.curate",), "Mark the images QUERY selects as accepted."),
    "reject": (("curator.cli.curate",), "Mark the images QUERY selects as rejected."),
    "unreview": (("curator.cli.curate",), "Put the images QUERY selects back to pending review."),
    "dedup": (
        ("curator.cli.curate",),
        "Find duplicates and mark all but one keeper per group (never deletes files).",
    ),
    "quality": (
        ("curator.cli.curate",),
        "Score sharpness, JPEG quality, megapixels (and aesthetic) for the catalog's images.",
    ),
    "export": (
        ("curator.cli.export",),
        "Write the images matching QUERY as a bucketed, captioned training set.",
    ),
    "reexport": (
        ("curator.cli.export",),
        "Render export EXPORT_ID again with its settings and stored (maybe adjusted) crops.",
    ),
    "review": (
        ("curator.cli.review",),
        "Review, tag and caption the images QUERY selects, keyboard first (? lists the keys).",
    ),
    "prompt": (
        ("curator.cli.generate",),
        "Show how A1111 reads TEXT: schedule, weights, 75-token chunks.",
    ),
    "generate": (
        ("curator.cli.generate",),
        "Generate images from PROMPT (A1111 syntax); each PNG carries A1111 infotext.",
    ),
    "regenerate": (
        ("curator.cli.generate",),
        "Rebuild IMAGE's generation (or each one --where selects) from its infotext.",
    ),
    "xyz": (
        ("curator.cli.generate",),
        "An A1111 X/Y/Z plot: one image per cell and a labelled grid, all catalogued.",
    ),
    "embed": (
        ("curator.cli.search",),
        "Store a CLIP image embedding per image and model (for similar, search, dedup).",
    ),
    "similar": (
        ("curator.cli.search",),
        "Images most like IMAGE (a catalogued path, sha256 prefix or id, or any image file).",
    ),
    "search": (
        ("curator.cli.search",),
        'Images that best match TEXT, e.g. curator search "a red bicycle".',
    ),
    "describe": (
        ("curator.cli.describe",),
        "Describe images in plain sentences for people using screen readers.",
    ),
    "interrogate": (
        ("curator.cli.describe",),
        "Write a Stable Diffusion prompt per image, the clip-interrogator way.",
    ),
    "caption": (
        ("curator.cli.describe",),
        "Caption images with BLIP, BLIP-2 or GIT (stored as captions of kind `caption`).",
    ),
    "exports": (
        ("curator.cli.export",),
        "List past exports, newest first, with the ids `reexport` and `crops set` take.",
    ),
    "crops": (("curator.cli.export",), "Stored crops of past exports."),
    "train": (
        ("curator.cli.train",),
        "Train DreamBooth, LoRA or textual-inversion weights on an exported training set.",
    ),
    "prepare": (
        ("curator.cli.prepare",),
        "Scan SRC, drop duplicates and images too small to train on, detect faces, tag, "
        "bucket, crop, caption and write a DreamBooth training set, then say what was kept "
        "and what was dropped and why.",
    ),
    "db": (("curator.cli.db",), "Catalog databases: copy a catalog between SQLite and PostgreSQL."),
}


class FullHelpGroup(click.Group):
    """A group whose command list shows each summary whole, wrapped, never cut with '...'."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            summary = self.summary(ctx, name)
            if summary is not None:
                rows.append((name, summary))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def summary(self, ctx: click.Context, name: str) -> str | None:
        command = self.get_command(ctx, name)
        if command is None or command.hidden:
            return None
        return command.get_short_help_str(limit=1000)


class CuratorGroup(FullHelpGroup):
    """Loads command modules on demand; prints any error a user can act on as one line."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._loaded: dict[str, click.Command] = {}
        self._registered: set[str] = set()
        super().__init__(*args, **kwargs)

    # --- lazy commands ---

    @property
    def commands(self) -> dict[str, click.Command]:
        """Every command: code that reads the whole table gets every module loaded."""
        self.load_all()
        return self._loaded

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._loaded = dict(value)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is None:
            raise TypeError("Command has no name.")
        self._loaded[name] = cmd

    def _register(self, module: str) -> None:
        if module not in self._registered:
            self._registered.add(module)
            importlib.import_module(module).register(self)

    def load_all(self) -> None:
        for module in COMMAND_MODULES:
            self._register(module)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self._loaded))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        modules = COMMANDS[name][0] if name in COMMANDS else COMMAND_MODULES
        for module in modules:  # `tags` needs both of its modules
            self._register(module)
        return self._loaded.get(name)

    def summary(self, ctx: click.Context, name: str) -> str | None:
        if name in COMMANDS:
            return COMMANDS[name][1]
        return super().summary(ctx, name)

    # --- errors ---

    def main(self, args: list[str] | None = None, *a: Any, **kw: Any) -> Any:
        argv = sys.argv[1:] if args is None else list(args)
        for arg in argv:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                click.echo(
                    f"error: the argument {_shown(arg)} is not valid UTF-8 text; "
                    "Curator stores names and queries as UTF-8",
                    err=True,
                )
                sys.exit(2)
        return super().main(argv, *a, **kw)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            _stdout_to_devnull()  # `curator ls | head`: the reader has all it wants
            sys.exit(0)
        except CuratorError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; finished batches are saved, run again to resume", 130)
        except OverflowError as exc:
            _fail(f"a number is too large ({exc}); the most is {2**63 - 1}", 2)
        except UnicodeError as exc:
            _fail(f"text that is not valid UTF-8: {exc}", 2)
        except Exception as exc:
            app = ctx.obj if isinstance(ctx.obj, AppContext) else None
            message = _foreign_message(exc, app.where if app else "the catalog")
            if message is None:
                raise
            _fail(message, 1)


def _fail(message: str, code: int) -> None:
    from db.errors import redact

    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


def _shown(arg: str) -> str:
    return ascii(arg.encode("utf-8", "surrogateescape"))[1:]


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests)
        pass


def _foreign_message(exc: BaseException, where: str) -> str | None:
    """One line for errors from the other layers that are meant for the user."""
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "sqlite3")):
        from db.errors import database_error_message

        return database_error_message(exc, where)
    from db.migrate import CatalogOpenError

    if isinstance(exc, CatalogOpenError):
        return str(exc)
    if module.startswith("taggers"):
        from taggers.errors import TaggerError

        if isinstance(exc, TaggerError):
            return str(exc)
    return None


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_spec",
    envvar="CURATOR_DB",
    metavar="PATH_OR_URL",
    help="Catalog: a SQLite path or any SQLAlchemy URL. [env CURATOR_DB; default ./curator.db]",
)
@click.version_option(__version__, prog_name="curator")
@click.pass_context
def main(ctx: click.Context, db_spec: str | None) -> None:
    """Curator: tag, caption, curate and export image datasets around one catalog."""
    ctx.obj = ctx.with_resource(AppContext(db_spec))
