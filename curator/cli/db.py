"""`curator db copy`: move a catalog between SQLite and a database server."""

from __future__ import annotations

import click

from curator.cli.context import emit_json, json_option


@click.group("db")
def db_group() -> None:
    """Catalog databases: copy a catalog between SQLite and PostgreSQL."""


@db_group.command("copy")
@click.argument("source")
@click.argument("dest")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless the copy differs.")
def copy_cmd(source: str, dest: str, as_json: bool, quiet: bool) -> None:
    """Copy the catalog SOURCE into DEST (each a SQLite path or a database URL such as
    postgresql+psycopg://user@host/db). DEST must be new or empty. Prints each table's
    row count and content checksum on both sides; fails if any differ."""
    from curator.errors import CuratorError
    from db.copy import copy_catalog
    from db.errors import redact

    report = copy_catalog(source, dest)
    differ = [r.table for r in report if not r.same]
    if as_json:
        emit_json([r.as_dict() for r in report])
    elif not quiet or differ:
        width = max(len(r.table) for r in report)
        click.echo(f"{'table':<{width}}  {'rows':>9}  {'checksum (source)':<16}  dest")
        for r in report:
            mark = "same" if r.same else f"DIFFERS: {r.dest_rows} rows {r.dest_checksum[:16]}"
            click.echo(f"{r.table:<{width}}  {r.source_rows:>9}  {r.source_checksum[:16]}  {mark}")
        if not differ:
            rows = sum(r.source_rows for r in report)
            click.echo(f"copied {rows} rows in {len(report)} tables to {redact(dest)}")
    if differ:
        raise CuratorError(f"the copy differs from the source in: {', '.join(differ)}")


def register(main: click.Group) -> None:
    main.add_command(db_group)
