"""onnxruntime sessions: execution providers, threads, int8 quantisation, weight hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taggers.errors import ModelLoadError, TaggerError, require

if TYPE_CHECKING:
    import onnxruntime

CPU = "CPUExecutionProvider"

# What "auto" tries, best first. TensorRT is left out on purpose: onnxruntime-gpu lists it
# even without the TensorRT libraries, and it builds an engine per input shape (minutes);
# ask for it with device="tensorrt".
AUTO_PROVIDERS: tuple[str, ...] = (
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
)

DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": ("CUDAExecutionProvider", CPU),
    "gpu": ("CUDAExecutionProvider", CPU),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU),
    "coreml": ("CoreMLExecutionProvider", CPU),
    "directml": ("DmlExecutionProvider", CPU),
    "dml": ("DmlExecutionProvider", CPU),
    "rocm": ("ROCMExecutionProvider", CPU),
    "openvino": ("OpenVINOExecutionProvider", CPU),
}


def available_providers() -> list[str]:
    require("onnxruntime", purpose="running ONNX models")
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def select_providers(device: str = "auto", available: Sequence[str] | None = None) -> list[str]:
    """Execution providers for `device`, best first, always ending with the CPU.

    `device` is "auto", a short name ("cpu", "cuda", "tensorrt", "coreml", "directml", ...)
    or a full provider name such as "CUDAExecutionProvider".
    """
    have = list(available) if available is not None else available_providers()
    key = device.strip().lower()
    if key == "auto":
        return [p for p in AUTO_PROVIDERS if p in have] + [CPU]
    if key in DEVICE_PROVIDERS:
        wanted = DEVICE_PROVIDERS[key]
    elif device.endswith("ExecutionProvider"):
        wanted = (device, CPU)
    else:
        known = ", ".join(["auto", *DEVICE_PROVIDERS])
        raise TaggerError(f"unknown device {device!r}; use one of: {known}")
    if wanted[0] not in have:
        raise ModelLoadError(
            f"device {device!r} needs {wanted[0]}, but this onnxruntime offers only "
            f"{', '.join(have)}; install the matching onnxruntime build or use --device cpu"
        )
    return [p for p in wanted if p in have or p == CPU]


def create_session(
    model_path: Path, *, device: str = "auto", threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An InferenceSession on the best providers for `device`."""
    providers = select_providers(device)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Idle intra-op threads spin by default, burning the cores that decode workers
    # share with inference; parked threads leave them to the pipeline.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        raise ModelLoadError(f"cannot load {model_path}: {exc}") from exc


@lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the key so an edited file is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _hash_file(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def file_revision(path: Path) -> str:
    """A short sha256 of the file's bytes: what `Model.revision` records."""
    return file_sha256(path)[:12]


def _pre_process(model_path: Path, work_dir: Path) -> Path:
    """onnxruntime's recommended shape inference and graph fusion before quantising.

    Best effort: a model it cannot handle is quantised as it is.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output = work_dir / "pre.onnx"
    try:
        quant_pre_process(str(model_path), str(output))
    except Exception:  # noqa: BLE001 - pre-processing only improves quantisation
        return model_path
    return output


def quantize_int8(model_path: Path, cache_dir: Path) -> Path:
    """A dynamically int8-quantised copy of `model_path`, cached by the source's hash.

    Only MatMul and Gemm are quantised, with signed int8 weights: the pointwise layers
    carry almost all of a tagger's compute and onnxruntime's MatMulInteger kernels are
    fast for them. Convolutions stay in float: the CPU provider has no signed
    ConvInteger, and unsigned weights (or quantised depthwise convolutions) run slower
    than float, which made quantising every operator slower than not quantising.
    Weights are per output channel in 7 bits (``reduce_range``): CPUs without VNNI
    multiply 8-bit pairs with saturating instructions, which 7-bit weights never reach,
    and per-channel scales win back the bit. On a WD14-sized ConvNeXt-T (AVX2, no VNNI)
    every signed variant ran 1.5x fp32: the MatMuls themselves about 1.8x, while the
    float depthwise convolutions, GELU and LayerNorm (a third of int8's time) stay put.
    """
    model_path = Path(model_path)
    cache_dir = Path(cache_dir)
    # The suffix names the recipe: copies quantised another way are not reused.
    target = cache_dir / f"{model_path.stem}-{file_revision(model_path)}-int8mm-pc7.onnx"
    if target.is_file():
        return target  # before importing the quantiser, seconds of a run's start
    require("onnxruntime", purpose="int8 quantisation")
    require("onnx", purpose="int8 quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.stem}.", dir=cache_dir) as work:
        work_dir = Path(work)
        partial = work_dir / target.name
        try:
            quantize_dynamic(
                _pre_process(model_path, work_dir),
                partial,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                reduce_range=True,
                # Only products with a constant weight (the layers): activation x
                # activation products, such as attention in ViT taggers, stay float.
                extra_options={"MatMulConstBOnly": True},
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot quantise {model_path}: {exc}") from exc
        os.replace(partial, target)
    return target


QUANTIZE_CHOICES = ("int8",)


def prepare_model_file(model_path: Path, *, quantize: str | None, cache_dir: Path) -> Path:
    """The file to load: `model_path` itself, or its quantised copy in `cache_dir`."""
    if quantize is None:
        return Path(model_path)
    if quantize not in QUANTIZE_CHOICES:
        choices = ", ".join(QUANTIZE_CHOICES)
        raise TaggerError(f"unknown quantisation {quantize!r}; use one of: {choices}")
    return quantize_int8(model_path, cache_dir)


class LazySession:
    """An InferenceSession created on first use and dropped when pickled.

    Models hold one so that constructing a model, or sending it to a worker process,
    never loads weights.
    """

    def __init__(self, model_path: Path, *, device: str = "auto", threads: int | None = None):
        self.model_path = Path(model_path)
        self.device = device
        self.threads = threads
        self._session: onnxruntime.InferenceSession | None = None

    @property
    def session(self) -> onnxruntime.InferenceSession:
        if self._session is None:
            self._session = create_session(
                self.model_path, device=self.device, threads=self.threads
            )
        return self._session

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        session = self.session
        return session.run(None, {session.get_inputs()[0].name: batch})

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
