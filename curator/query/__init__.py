"""The query language: parsed once, compiled to one SQLAlchemy statement, used everywhere."""
