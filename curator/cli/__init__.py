"""The `curator` command: a thin face over the library, one module per command group."""

from __future__ import annotations

import importlib
import sys

import click

from curator import __version__
from curator.cli.context import AppContext
from curator.errors import CuratorError

# Each module defines `register(main)`; adding a command group is one line here.
COMMAND_MODULES = [
    "curator.cli.scan",
    "curator.cli.catalog",
    "curator.cli.tagging",
    "curator.cli.curate",
    "curator.cli.export",
    "curator.cli.prepare",
    "curator.cli.search",
    "curator.cli.describe",
]


class CuratorGroup(click.Group):
    """Prints a library error as one line on stderr and exits non-zero."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CuratorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except _foreign_errors() as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; finished batches are saved, run again to resume", err=True)
            sys.exit(130)


def _foreign_errors() -> tuple[type[BaseException], ...]:
    """Errors from the other layers that are meant for the user as they are."""
    from db.migrate import CatalogOpenError

    errors: list[type[BaseException]] = [CatalogOpenError]
    try:
        from taggers.errors import TaggerError

        errors.append(TaggerError)
    except ImportError:
        pass
    return tuple(errors)


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


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(main)
