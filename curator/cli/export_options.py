"""Options `export` and `prepare` share: one spelling, range, default and help for each.

Older spellings stay as hidden aliases (`alias`); `merge_aliases` folds them into the
current name. Library errors name library arguments (``force=True``); `cli_words`
rewrites them as the options a person types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from curator.cli.context import workers_option
from curator.errors import CuratorError
from curator.export.buckets import PRESETS
from curator.export.crops import MODES
from curator.media.imagewrite import FORMATS

_OLD = "__old"

# Library argument -> command-line option, longest first.
_WORDS = (
    ("pass overwrite=True", "use --force twice"),
    ("pass force=True", "use --force"),
    ("resolution=(W, H)", "--resolution W,H"),
)


@contextmanager
def cli_words() -> Iterator[None]:
    """Re-raise library errors with the command-line spelling of the arguments they name."""
    try:
        yield
    except CuratorError as error:
        message = str(error)
        for library, cli in _WORDS:
            message = message.replace(library, cli)
        if message != str(error):
            error.args = (message,)
        raise


def alias(*names: str, dest: str, flag: bool = False) -> Callable[[Any], Any]:
    """A hidden older spelling of the option stored in ``dest``."""
    return click.option(*names, dest + _OLD, hidden=True, is_flag=flag, default=None)


def merge_aliases(settings: dict[str, Any]) -> dict[str, Any]:
    """Fold hidden alias values into their options (the current spelling wins)."""
    for key in [k for k in settings if k.endswith(_OLD)]:
        value = settings.pop(key)
        name = key[: -len(_OLD)]
        if value is not None and settings.get(name) in (None, "", False):
            settings[name] = value
    return settings


def _resolution(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter("give W,H (e.g. 512,768) or one side (512)") from None
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) != 2:
        raise click.BadParameter("give W,H (e.g. 512,768) or one side (512)")
    return (parts[0], parts[1])


def _colour(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from taggers.pixels import parse_colour

    try:
        return parse_colour(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _apply(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def out_option(required: bool = True) -> Callable[[Any], Any]:
    return click.option(
        "--out",
        "-o",
        "out",
        required=required,
        type=click.Path(),
        help="Target folder (created, or replaced with --force).",
    )


def subject_options(required: bool) -> Callable[[Any], Any]:
    """The instance token and class word (DreamBooth's ``sks`` and ``dog``)."""
    return _apply(
        [
            click.option(
                "--instance-token",
                "instance",
                required=required,
                default=None if required else "",
                help="Rare token the subject is trained under, e.g. sks.",
            ),
            alias("--instance", "--trigger", dest="instance"),
            click.option(
                "--class-word",
                "class_word",
                required=required,
                default=None if required else "",
                help="The subject's class, e.g. dog or woman.",
            ),
            alias("--class", dest="class_word"),
        ]
    )


def bucket_options(preset_default: str = "sd15") -> Callable[[Any], Any]:
    """Bucket preset and adjustments, as sd-scripts names them in brackets."""
    return _apply(
        [
            click.option(
                "--preset",
                "bucket",
                type=click.Choice(sorted(PRESETS)),
                default=preset_default,
                show_default=True,
                help="Bucket preset (sd15: 512x768 area; sdxl: 1024x1024); the options "
                "below adjust it.",
            ),
            alias("--bucket", dest="bucket"),
            click.option(
                "--max-area",
                type=click.IntRange(1),
                help="Bucket pixel area (written to trainer configs as an exact W,H pair).",
            ),
            click.option(
                "--resolution",
                callback=_resolution,
                metavar="W,H",
                help="Bucket area as W,H [--resolution].",
            ),
            click.option(
                "--min-side",
                type=click.IntRange(1),
                help="Smallest bucket side [--min_bucket_reso]; images with a shorter side "
                "are reported (prepare drops them).",
            ),
            click.option(
                "--max-side",
                type=click.IntRange(1),
                help="Largest bucket side [--max_bucket_reso].",
            ),
            click.option(
                "--step",
                type=click.IntRange(1),
                help="Bucket side step in pixels [--bucket_reso_steps].",
            ),
            click.option(
                "--no-upscale",
                is_flag=True,
                default=None,
                help="Never enlarge an image: small images get smaller buckets "
                "[--bucket_no_upscale].",
            ),
        ]
    )


def image_options() -> Callable[[Any], Any]:
    return _apply(
        [
            click.option(
                "--format",
                "image_format",
                type=click.Choice(FORMATS),
                default="png",
                show_default=True,
                help="Image file format.",
            ),
            click.option(
                "--background",
                callback=_colour,
                metavar="COLOUR",
                help="Colour transparent pixels are flattened onto: a name, #rrggbb or "
                "r,g,b [default: white].",
            ),
            click.option(
                "--seed",
                type=int,
                default=0,
                show_default=True,
                help="Seed for random crops and shuffles.",
            ),
            workers_option("Scanning, decoding and rendering"),
        ]
    )


def crop_option(default: str) -> Callable[[Any], Any]:
    return click.option(
        "--crop",
        type=click.Choice(MODES),
        default=default,
        show_default=True,
        help="center; random (seeded); focal: keep detected faces, else the most detailed region.",
    )


def repeats_option(default: int) -> Callable[[Any], Any]:
    return click.option(
        "--repeats",
        type=click.IntRange(1),
        default=default,
        show_default=True,
        help="How often each image is seen per epoch (kohya's folder prefix).",
    )


def reg_query_option() -> Callable[[Any], Any]:
    return click.option(
        "--reg-query",
        metavar="QUERY",
        help="Query for regularisation (class) images.",
    )


def drop_unset(settings: dict[str, Any], *names: str) -> dict[str, Any]:
    """Leave out options that were not given, so library defaults apply."""
    for name in names:
        if settings.get(name) is None:
            settings.pop(name, None)
    return settings
