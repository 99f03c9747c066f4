"""`curator review`: the terminal review app over the images a query selects."""

from __future__ import annotations

import click

from curator.cli.context import AppContext, pass_app
from curator.errors import UsageError


@click.command("review", context_settings={"ignore_unknown_options": True})
@click.argument("query", nargs=-1)
@click.option(
    "--score",
    default="aesthetic",
    show_default=True,
    metavar="NAME",
    help="Score shown in the list's last column (e.g. aesthetic, nsfw, rating).",
)
@pass_app
def review_cmd(app: AppContext, query: tuple[str, ...], score: str) -> None:
    """Review, tag and caption the images QUERY selects, keyboard first (? lists the keys).

    Quote terms the shell would read: `curator review 'width>=768' -monochrome`.
    """
    try:
        from tui.app import ReviewApp
    except ImportError as error:
        raise UsageError(
            f"the review app needs the `tui` extra ({error.name} is missing): "
            "pip install 'curator[tui]'"
        ) from None
    ReviewApp(app.catalog, " ".join(query), score=score).run()


def register(main: click.Group) -> None:
    main.add_command(review_cmd)
