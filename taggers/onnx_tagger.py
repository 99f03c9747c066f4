"""What WD14 and DeepDanbooru taggers share: an ONNX image classifier with a tag list.

A subclass says how pixels become its input (`pixels`, uint8 in the worker; `to_input`,
float in the main process), how it reads its tag list, and which non-rating tags an
output row picks. This base loads and validates the model before any image is touched,
runs batches, and turns a row of scores into a `Result`:

- ratings: every rating's score as a score (``rating:general`` ...), and only the top
  rating as a tag, so an image carries one rating tag;
- NaN scores are never picked; columns with an empty name are never emitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from taggers.base import DecodedImage, Result, Tag, as_decoded
from taggers.errors import ModelLoadError, ModelNotFoundError, TaggerError
from taggers.onnx_session import LazySession, file_revision, prepare_model_file

# A model declaring a larger square input is refused: no tagger is trained that large,
# and a 30000 x 30000 float input needs gigabytes per image.
MAX_INPUT_SIDE = 2048
FLOAT_INPUTS = frozenset({"tensor(float)", "tensor(float16)", "tensor(double)"})

# How tags are ordered in a Result: ratings first, then identities, then the rest.
CATEGORY_ORDER = {"rating": 0, "character": 1, "copyright": 2, "artist": 3}


@dataclass(frozen=True)
class TagTable:
    """The tag names and categories that line up with a model's output columns."""

    names: tuple[str, ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def groups(self) -> dict[str, np.ndarray]:
        """Column indices of each category (unnamed columns left out), in first-seen order."""
        groups: dict[str, list[int]] = {}
        for i, (name, category) in enumerate(zip(self.names, self.categories, strict=True)):
            if name:
                groups.setdefault(category, []).append(i)
        return {category: np.array(idx, dtype=np.intp) for category, idx in groups.items()}


def read_text(path: Path, what: str) -> str:
    """A tag list's text; binary or non-UTF-8 files are a one-line `ModelLoadError`."""
    data = Path(path).read_bytes()
    if b"\x00" in data:
        raise ModelLoadError(f"{path} is not a text file ({what} must be UTF-8 text)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(
            f"{path} is not UTF-8 text (byte {exc.start}); {what} must be UTF-8"
        ) from None


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A validated image input: layout, square side and fixed batch size (if any)."""

    layout: str  # NHWC | NCHW
    side: int
    batch: int | None  # None: any batch size


def image_input_spec(shape: Sequence[Any], dtype: str, model_path: Path) -> InputSpec:
    """Validate an image classifier's input; a shape that cannot be right is refused."""
    dims = list(shape)
    if dtype not in FLOAT_INPUTS:
        raise ModelLoadError(f"{model_path}: expected a float image input, got {dtype}")
    if len(dims) != 4:
        raise ModelLoadError(
            f"{model_path}: expected a 4-d image input [batch, side, side, 3], got {dims}"
        )
    if dims[3] == 3:
        layout, height, width = "NHWC", dims[1], dims[2]
    elif dims[1] == 3:
        layout, height, width = "NCHW", dims[2], dims[3]
    else:
        raise ModelLoadError(f"{model_path}: expected 3 colour channels in the input, got {dims}")
    side = _fixed(height)
    if side is None or _fixed(width) != side:
        raise ModelLoadError(f"{model_path}: expected a fixed square input, got {dims} ({layout})")
    if side > MAX_INPUT_SIDE:
        raise ModelLoadError(
            f"{model_path}: declares a {side}x{side} input, over the {MAX_INPUT_SIDE}-pixel "
            "limit; this is not a tagger's input shape"
        )
    if isinstance(dims[0], int) and dims[0] <= 0:
        raise ModelLoadError(f"{model_path}: bad batch dimension in input shape {dims}")
    return InputSpec(layout, side, _fixed(dims[0]))


class OnnxTagger:
    """An ONNX image classifier whose output columns are a tag list."""

    kind = "tagger"
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    FAMILY: ClassVar[str] = "ONNX"  # for messages: "a WD14 tagger needs ..."

    def __init__(
        self,
        model_path: Path,
        tags_path: Path,
        *,
        name: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        quantize: str | None = None,
        quantize_cache: Path | None = None,
    ):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelNotFoundError(
                f"{model_path} is missing: a {self.FAMILY} tagger needs its .onnx file"
            )
        self.source_path = model_path
        self.tags_path = Path(tags_path)
        self.table = self.load_tags(self.tags_path)
        if not any(self.table.names):
            raise ModelLoadError(f"{self.tags_path} lists no tags")
        self.quantize = quantize
        self.model_path = prepare_model_file(
            model_path,
            quantize=quantize,
            cache_dir=Path(quantize_cache or model_path.parent / ".quantized"),
        )
        self.name = name or (
            model_path.parent.name if model_path.stem == "model" else model_path.stem
        )
        self.revision = file_revision(self.model_path)
        self._session = LazySession(self.model_path, device=device, threads=threads)
        self._spec: InputSpec | None = None

    # -- what a subclass says ------------------------------------------------------------

    @classmethod
    def load_tags(cls, path: Path) -> TagTable:
        raise NotImplementedError

    def pixels(self, decoded: DecodedImage, side: int) -> np.ndarray:
        """(side, side, 3) uint8 in the channel order the model takes (worker side)."""
        raise NotImplementedError

    def to_input(self, batch: np.ndarray) -> np.ndarray:
        """A uint8 NHWC batch as the float values the model takes."""
        return batch.astype(np.float32)

    def picked(self, scores: np.ndarray) -> list[int]:
        """Columns of the non-rating tags this row of scores puts on the image."""
        raise NotImplementedError

    # -- loading and validation --------------------------------------------------------------

    def load(self) -> None:
        """Load the session and check input, output and tag list fit together."""
        if self._spec is not None:
            return
        try:
            session = self._session.session
        except TaggerError:
            raise
        except Exception as exc:  # noqa: BLE001 - any loader failure is one line
            raise ModelLoadError(f"cannot load {self.model_path}: {exc}") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(
                f"{self.model_path}: expected one image input and a score output, got "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        spec = image_input_spec(list(inputs[0].shape), inputs[0].type, self.model_path)
        width = list(outputs[0].shape)[-1] if outputs[0].shape else None
        if not isinstance(width, int):
            # A dynamic output width: one all-white image tells the real one.
            probe = np.full((spec.batch or 1, spec.side, spec.side, 3), 255, np.uint8)
            width = self._run(probe, spec).shape[-1]
        if width != len(self.table):
            raise ModelLoadError(
                f"{self.model_path} scores {width} tags but {self.tags_path} lists "
                f"{len(self.table)}: the two files do not belong together"
            )
        self._spec = spec

    @property
    def spec(self) -> InputSpec:
        if self._spec is None:
            self.load()
        assert self._spec is not None
        return self._spec

    @property
    def input_size(self) -> int:
        """The square side the model was exported with (loads the session once)."""
        return self.spec.side

    # -- the Model protocol ----------------------------------------------------------------

    def preprocess(self, decoded: DecodedImage) -> np.ndarray:
        return self.pixels(as_decoded(decoded), self.input_size)

    def predict(self, batch: Sequence[np.ndarray] | np.ndarray) -> list[Result]:
        spec = self.spec
        array = batch if isinstance(batch, np.ndarray) else np.stack(list(batch))
        if array.shape[1:] != (spec.side, spec.side, 3):
            raise ValueError(
                f"expected arrays of shape ({spec.side}, {spec.side}, 3), got {array.shape[1:]}"
            )
        if spec.batch is not None and len(array) != spec.batch:
            parts = [self._run(array[i : i + 1], spec) for i in range(len(array))]
            scores = np.concatenate(parts)
        else:
            scores = self._run(array, spec)
        scores = scores.reshape(len(array), -1)
        if scores.shape[-1] != len(self.table):
            raise ModelLoadError(
                f"{self.model_path} scored {scores.shape[-1]} tags but {self.tags_path} lists "
                f"{len(self.table)}"
            )
        return [self.result_from_scores(row) for row in scores]

    def _run(self, array: np.ndarray, spec: InputSpec) -> np.ndarray:
        x = np.ascontiguousarray(self.to_input(array), dtype=np.float32)
        if spec.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return np.asarray(self._session.run(x)[0])

    def result_from_scores(self, scores: np.ndarray) -> Result:
        """Tags and scores for one image's output row (see the module docstring)."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        names, categories = self.table.names, self.table.categories
        result = Result()
        ratings = self.table.groups.get("rating", np.array([], dtype=np.intp))
        finite = [i for i in ratings if math.isfinite(scores[i])]
        for i in finite:
            result.scores[f"rating:{names[i]}"] = float(scores[i])
        tags = [Tag(names[i], categories[i], float(scores[i])) for i in self.picked(scores)]
        if finite:
            top = max(finite, key=lambda i: scores[i])
            tags.append(Tag(names[top], "rating", float(scores[top])))
        tags.sort(key=lambda t: (CATEGORY_ORDER.get(t.category, len(CATEGORY_ORDER)), -t.score))
        result.tags = tags
        return result

    def params(self) -> dict[str, Any]:
        return {
            "quantize": self.quantize,
            "model_file": self.source_path.name,
            "tags": len(self.table),
        }

    def __getstate__(self) -> dict[str, Any]:
        # Validate before pickling so a worker calling `preprocess` never loads weights;
        # the session itself is not pickled (see LazySession).
        self.load()
        return self.__dict__.copy()
