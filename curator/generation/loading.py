"""Load a Stable Diffusion pipeline: a diffusers folder, a hub id, or one checkpoint file.

Checkpoint files load through diffusers' `from_single_file`; pickled ones (`.ckpt`,
`.pt`, `.bin`) only with `allow_pickle`, since unpickling runs arbitrary code. Hub ids
come from the local huggingface_hub cache unless downloads are allowed.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import CuratorError
from curator.generation.hashes import autov2_hash

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
SAFE_SUFFIXES = {".safetensors"}


class LoadError(CuratorError):
    """A checkpoint that cannot be loaded."""


@dataclass
class LoadedModel:
    pipeline: Any
    name: str  # as A1111 writes `Model:` (the file or folder stem)
    hash: str | None  # AutoV2, for single files
    device: str
    dtype: Any
    source: str


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_pipeline(
    source: str,
    *,
    device: str | None = None,
    half: bool | None = None,
    vae: str | None = None,
    allow_pickle: bool = False,
    config: str | None = None,
    allow_download: bool = False,
    low_memory: bool = False,
) -> LoadedModel:
    """Load `source`; fp16 on a GPU unless `half` is False; `vae` replaces the VAE."""
    _quiet_library_bars()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return _load(source, device, half, vae, allow_pickle, config, allow_download, low_memory)


def _load(source, device, half, vae, allow_pickle, config, allow_download, low_memory):
    import torch

    device = pick_device(device)
    use_half = (device != "cpu") if half is None else half
    dtype = torch.float16 if use_half else torch.float32
    path = Path(source).expanduser()
    model_hash = None
    try:
        if path.is_dir():
            pipe = _family(_folder_is_xl(path)).from_pretrained(
                path, **_dtype_arg(dtype), **_no_checker(path), local_files_only=True
            )
            name = path.name
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in PICKLE_SUFFIXES and not allow_pickle:
                raise LoadError(
                    f"{path.name} is a pickled checkpoint, which can run code when loaded; "
                    "convert it to .safetensors or pass --allow-pickle if you trust it"
                )
            if suffix not in SAFE_SUFFIXES | PICKLE_SUFFIXES:
                raise LoadError(f"{path.name}: not a checkpoint (.safetensors, .ckpt)")
            xl = _file_is_xl(path)
            kwargs: dict[str, Any] = {**_dtype_arg(dtype), **({} if xl else _NO_CHECKER)}
            if config:
                kwargs["config"] = config
            if not allow_download:
                kwargs["local_files_only"] = True
            pipe = _family(xl).from_single_file(str(path), **kwargs)
            name, model_hash = path.stem, autov2_hash(path)
        else:
            if path.suffix or source.count("/") != 1:
                raise LoadError(f"no such checkpoint file or folder: {source}")
            xl = _hub_is_xl(source, allow_download)
            pipe = _family(xl).from_pretrained(
                source,
                **_dtype_arg(dtype),
                **({} if xl else _NO_CHECKER),
                local_files_only=not allow_download,
            )
            name = source.split("/")[-1]
    except LoadError:
        raise
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        remote = not path.exists()
        hint = " (offline: only the local cache is used)" if remote and not allow_download else ""
        raise LoadError(f"cannot load {source}{hint}: {first}") from error
    if vae:
        pipe.vae = _load_vae(vae, dtype)
    if low_memory and device == "cuda":
        pipe.enable_attention_slicing()
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe, name, model_hash, device, dtype, str(source))


_NO_CHECKER = {"safety_checker": None}


def _family(xl: bool):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if xl else StableDiffusionPipeline


def is_local_sdxl(source: str) -> bool:
    """Whether a local diffusers folder or checkpoint file holds SDXL (a hub id: False)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_is_xl(path)
    return path.is_file() and _file_is_xl(path)


def _folder_is_xl(path: Path) -> bool:
    """A diffusers folder's pipeline class names SDXL, or it has a second text encoder."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (path / "text_encoder_2").is_dir()
    return "XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index


def _no_checker(path: Path) -> dict[str, Any]:
    return {} if _folder_is_xl(path) else _NO_CHECKER


def _file_is_xl(path: Path) -> bool:
    """An original-layout SDXL checkpoint has a second text embedder (OpenCLIP-G)."""
    if path.suffix.lower() not in SAFE_SUFFIXES:
        return False  # a pickled file is only opened by diffusers, after consent
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return any(key.startswith("conditioner.embedders.1.") for key in handle.keys())
    except (OSError, ValueError, SafetensorError) as error:
        raise LoadError(f"cannot read {path.name}: {error}") from error


def _hub_is_xl(repo: str, allow_download: bool) -> bool:
    from huggingface_hub import hf_hub_download

    try:
        index = hf_hub_download(repo, "model_index.json", local_files_only=not allow_download)
    except Exception:  # not cached or no such repository: from_pretrained says which
        return False
    return _folder_is_xl(Path(index).parent)


def _dtype_arg(dtype) -> dict[str, Any]:
    """Newer diffusers call it `dtype` and warn about `torch_dtype`, the only name older
    releases know; the warning is filtered in `load_pipeline`."""
    return {"torch_dtype": dtype}


def _quiet_library_bars() -> None:
    """diffusers and transformers draw their own loading bars on stderr; Curator reports
    progress itself, and `--json` output must stay clean. Both libraries only offer a
    process-wide switch."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()


def _load_vae(source: str, dtype):
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            return AutoencoderKL.from_pretrained(path, **_dtype_arg(dtype), local_files_only=True)
        if path.suffix.lower() in SAFE_SUFFIXES:
            return AutoencoderKL.from_single_file(str(path), **_dtype_arg(dtype))
    except (OSError, ValueError) as error:
        raise LoadError(f"cannot load VAE {source}: {error}") from error
    raise LoadError(f"VAE must be a diffusers folder or a .safetensors file: {source}")
