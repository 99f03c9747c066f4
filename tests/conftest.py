"""Shared fixtures: a generated corpus and a catalog per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.corpus import write_good  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two cores: torch with two threads beside other work runs many times slower."""
    try:
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_good(root)
    return root


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.db"


@pytest.fixture
def catalog(db_path: Path):
    from db import open_catalog

    cat = open_catalog(str(db_path))
    yield cat
    cat.close()
