"""The catalog: schema, engine, migrations."""

from db.engine import Catalog, database_url
from db.migrate import open_catalog

__all__ = ["Catalog", "database_url", "open_catalog"]
