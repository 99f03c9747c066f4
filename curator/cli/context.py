"""What every command shares: the catalog (opened on first use) and output helpers."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from db import Catalog, open_catalog


class AppContext:
    def __init__(self, db_spec: str | None):
        self.db_spec = db_spec
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.db_spec)
        return self._catalog

    def __enter__(self) -> AppContext:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._catalog is not None:
            self._catalog.close()


pass_app = click.make_pass_decorator(AppContext)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
