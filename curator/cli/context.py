"""What every command shares: the catalog (opened on first use), option types and
output helpers."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from db import Catalog

# The largest integer a catalog column holds (SQLite and PostgreSQL BIGINT).
INT64_MAX = 2**63 - 1


class AppContext:
    def __init__(self, db_spec: str | None):
        self.db_spec = db_spec
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from db import open_catalog

            self._catalog = open_catalog(self.db_spec)
        return self._catalog

    @property
    def where(self) -> str:
        """The catalog, named for error messages (password redacted)."""
        if self._catalog is None:
            return "the catalog"
        from db.errors import redact

        path = self._catalog.path
        return f"the catalog {path if path is not None else redact(self._catalog.url)}"

    def __enter__(self) -> AppContext:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._catalog is not None:
            self._catalog.close()


pass_app = click.make_pass_decorator(AppContext)


class Int64Range(click.IntRange):
    """An integer option or argument no larger than a catalog can store."""

    def __init__(self, lo: int | None = None, hi: int | None = None, **kwargs: Any):
        super().__init__(lo, INT64_MAX if hi is None else min(hi, INT64_MAX), **kwargs)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
QUIET = "curator.quiet"


def _remember_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta[QUIET] = value
    return value


def edit_output(f):  # noqa: ANN001, ANN201
    """`--json` and `--quiet` for a command that changes the catalog and says what it did."""
    f = click.option(
        "--quiet",
        "-q",
        is_flag=True,
        expose_value=False,
        callback=_remember_quiet,
        help="Print nothing but errors.",
    )(f)
    return json_option(f)


def say(message: str) -> None:
    """A status line, unless the command was given --quiet."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not ctx.meta.get(QUIET):
        click.echo(message)


def workers_option(what: str = "Decoding", default: str = "all cores"):  # noqa: ANN201
    """`--workers`: one range and meaning on every command that starts processes."""
    return click.option(
        "--workers",
        type=Int64Range(0, 1024),
        help=f"{what} processes [default: {default}]; 0 works in this process.",
    )


def escape_path(path: str) -> str:
    """A path as one printable line: control characters (a newline in a file name)
    and backslashes in such a name are written as backslash escapes; use --null for
    exact names."""
    if path.isprintable():
        return path
    out = []
    for ch in path:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            escaped = ch.encode("unicode_escape").decode("ascii")
            out.append(escaped if escaped != ch else f"\\x{ord(ch):02x}")
    return "".join(out)
