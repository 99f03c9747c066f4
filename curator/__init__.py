"""Curator: tag, caption, curate and export image datasets around one catalog."""

__version__ = "0.1.0"
