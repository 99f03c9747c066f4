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

from taggers.errors import ModelLoadError, TaggerError

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
    import onnxruntime

    providers = select_providers(device)
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


def _has_conv(model_path: Path) -> bool:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return any(node.op_type == "Conv" for node in model.graph.node)


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
    """A dynamically int8-quantised copy of `model_path`, cached by the source's hash."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise TaggerError("int8 quantisation needs the onnx package: pip install onnx") from exc
    model_path = Path(model_path)
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{model_path.stem}-{file_revision(model_path)}-int8.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # onnxruntime's CPU kernels lack ConvInteger for signed weights, so models with
    # convolutions get unsigned weights; pure matmul models (ViT) get signed ones.
    weight_type = QuantType.QUInt8 if _has_conv(model_path) else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix=f".{target.stem}.", dir=cache_dir) as work:
        work_dir = Path(work)
        partial = work_dir / target.name
        try:
            quantize_dynamic(_pre_process(model_path, work_dir), partial, weight_type=weight_type)
        except Exception as exc:
            raise ModelLoadError(f"cannot quantise {model_path}: {exc}") from exc
        os.replace(partial, target)
    return target


QUANTIZE_CHOICES = ("int8",)


def prepare_model_file(model_path: Path, *, quantize: str | None, cache_dir: Path) -> Path:
    """The file to load: `model_path` itself, or its quantised copy in `cache_dir`."""
    if quantize is None:
        return Path(model_path)
    if quantize != "int8":
        raise TaggerError(f"unknown quantisation {quantize!r}; use one of: int8")
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

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def input_shape(self) -> list[Any]:
        """The first input's shape; dynamic axes are strings or None."""
        return list(self.session.get_inputs()[0].shape)

    def output_shape(self) -> list[Any]:
        return list(self.session.get_outputs()[0].shape)

    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        session = self.session
        return session.run(None, {session.get_inputs()[0].name: batch})

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def square_input_size(shape: Sequence[Any], *, layout: str, model_path: Path) -> int:
    """The side of a square image input, read from an NHWC or NCHW input shape."""
    dims = list(shape)
    if len(dims) != 4:
        raise ModelLoadError(f"{model_path}: expected a 4-d image input, got shape {dims}")
    height, width = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    if not isinstance(height, int) or not isinstance(width, int) or height != width:
        raise ModelLoadError(
            f"{model_path}: expected a fixed square input, got shape {dims} ({layout})"
        )
    return height


def input_layout(shape: Sequence[Any]) -> str:
    """The layout of an image input: NHWC when the last axis holds 3 channels, else NCHW."""
    dims = list(shape)
    return "NHWC" if len(dims) == 4 and dims[3] == 3 else "NCHW"
