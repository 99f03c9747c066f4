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


class MissingDependencyError(TaggerError):
    """A package the model needs is not installed; the message names what to install."""


# Which install extra brings each optional module (see pyproject.toml).
EXTRAS: dict[str, str] = {
    "onnxruntime": "cpu",
    "onnx": "dev",
    "cv2": "cpu",
    "nudenet": "cpu",
    "rapidocr_onnxruntime": "cpu",
    "torch": "clip",
    "open_clip": "clip",
}


def install_hint(module: str) -> str:
    """What to install for ``module`` (its top-level name), as a user types it."""
    return f'pip install -e ".[{EXTRAS.get(module.split(".")[0], "all")}]"'


def missing_dependency(exc: ImportError, *, purpose: str) -> MissingDependencyError:
    """A one-line error for an import that failed while `purpose` ran."""
    module = (exc.name or str(exc)).split(".")[0]
    return MissingDependencyError(
        f"{purpose} needs {module}, which is not installed: {install_hint(module)}"
    )


def require(module: str, *, purpose: str) -> None:
    """Raise `MissingDependencyError` unless ``module`` can be imported (without importing it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError(
            f"{purpose} needs {module}, which is not installed: {install_hint(module)}"
        )
