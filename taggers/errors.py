"""Errors raised by `taggers/`; the library layer wraps or re-raises them for the CLI."""

from __future__ import annotations


class TaggerError(Exception):
    """Base class for every error a model in `taggers/` reports."""


class ModelNotFoundError(TaggerError):
    """A model's files are neither local, cached, nor downloadable.

    The message names the missing file and the command that supplies it.
    """


class ModelLoadError(TaggerError):
    """A model's files exist but cannot be loaded or do not match each other."""
