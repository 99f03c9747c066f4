"""Term banks for the interrogator and their cached CLIP text embeddings.

The default banks are the lists clip-interrogator publishes, read as data files from
its installed distribution (its code is never imported). Its artist list becomes
"by X" and "inspired by X"; the site terms it builds in code are rebuilt here the
same way, in the same order, since rankings depend on order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taggers.errors import ModelNotFoundError, TaggerError

DISTRIBUTION = "clip-interrogator"
DATA_FILES = ("artists", "flavors", "mediums", "movements", "negative")
SITES = (
    "Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr",
    "instagram", "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit",
    "shutterstock", "tumblr", "unsplash", "zbrush central",
)  # fmt: skip
# The banks `fast` and `best` merge, in clip-interrogator's order; banks added with
# --bank under a new name join them at the end.
MERGED = ("artists", "flavors", "mediums", "movements", "trendings")
CLASSIC = ("mediums", "artists", "trendings", "movements", "flavors")
BANK_NAMES = (*MERGED, "negative")


def trending_terms() -> list[str]:
    terms = list(SITES)
    terms += [f"trending on {s}" for s in SITES]
    terms += [f"featured on {s}" for s in SITES]
    terms += [f"{s} contest winner" for s in SITES]
    return terms


def read_terms(path: Path) -> list[str]:
    """One term per line, stripped, as clip-interrogator reads its lists."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f.readlines()]


def data_dir() -> Path:
    """The installed clip-interrogator's data folder, found without importing it."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise ModelNotFoundError(
            "the interrogator's default term banks come from the clip-interrogator package: "
            "pip install clip-interrogator --no-deps (or give every bank with --bank NAME=FILE)"
        ) from exc
    for file in dist.files or ():
        if file.name == "flavors.txt" and file.parent.name == "data":
            return Path(str(dist.locate_file(file))).parent
    raise ModelNotFoundError(f"the installed {DISTRIBUTION} has no data/flavors.txt; reinstall it")


def default_banks(data: Path | None = None) -> dict[str, list[str]]:
    data = data or data_dir()
    raw = {name: read_terms(data / f"{name}.txt") for name in DATA_FILES}
    artists = [f"by {a}" for a in raw["artists"]] + [f"inspired by {a}" for a in raw["artists"]]
    return {
        "artists": artists,
        "flavors": raw["flavors"],
        "mediums": raw["mediums"],
        "movements": raw["movements"],
        "trendings": trending_terms(),
        "negative": raw["negative"],
    }


def parse_bank_option(value: str) -> tuple[str, Path]:
    """`NAME=FILE` as given to --bank."""
    name, sep, file = value.partition("=")
    if not sep or not name.strip() or not file.strip():
        raise TaggerError(f"--bank wants NAME=FILE (one term per line), got {value!r}")
    path = Path(file.strip()).expanduser()
    if not path.is_file():
        raise TaggerError(f"--bank {name}: {path}: no such file")
    return name.strip(), path


def load_banks(
    extra: Mapping[str, Path] | Iterable[tuple[str, Path]] = (), data: Path | None = None
) -> dict[str, list[str]]:
    """Default banks with `extra` files added or replacing them by name."""
    extra = dict(extra)
    needed = set(BANK_NAMES) - set(extra)
    banks = default_banks(data) if needed else {}
    for name, path in extra.items():
        terms = [t for t in read_terms(path) if t]
        if not terms:
            raise TaggerError(f"bank {name}: {path} holds no terms")
        banks[name] = terms
    return banks


def default_cache_dir() -> Path:
    env = os.environ.get("CURATOR_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "curator"
    return root / "text-embeddings"


def terms_key(model_key: str, terms: list[str]) -> str:
    digest = hashlib.sha256(model_key.encode())
    digest.update(b"\0")
    digest.update("\n".join(terms).encode())
    return digest.hexdigest()[:24]


@dataclass
class EmbeddingCache:
    """Bank text embeddings on disk, one float16 .npy per hash of model and terms.

    float16, as clip-interrogator keeps them: its rankings are computed on the
    rounded values, so keeping them bit-for-bit gives the same rankings.
    """

    directory: Path | None
    encoded_texts: int = 0  # texts sent through the text tower by this cache

    def get(
        self, model_key: str, terms: list[str], encode: Callable[[list[str]], np.ndarray]
    ) -> np.ndarray:
        path = None
        if self.directory is not None:
            path = Path(self.directory) / f"{terms_key(model_key, terms)}.npy"
            if path.is_file():
                try:
                    cached = np.load(path, allow_pickle=False)
                    if cached.shape[0] == len(terms):
                        return cached
                except (OSError, ValueError):
                    pass  # a damaged file is rebuilt below
        embeds = np.asarray(encode(terms), dtype=np.float16)
        self.encoded_texts += len(terms)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, embeds, allow_pickle=False)
            os.replace(tmp, path)
        return embeds
