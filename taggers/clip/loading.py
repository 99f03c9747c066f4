"""open_clip models by spec: `ARCH/PRETRAINED`, `hf-hub:ORG/REPO`, or local files.

Resolution follows the taggers' order: an explicit path → `models_dir/NAME/` → the
Hugging Face cache → a hub download (unless offline) → `ModelNotFoundError` naming
what is missing. Nothing is loaded until `ClipBundle.model` is first used.

A local model is a folder holding an architecture config (`open_clip_config.json`
with a `model_cfg`, or a bare open_clip model config such as `ViT-B-32.json`) and one
weights file (`.safetensors`, or `.bin`/`.pt`/`.pth` loaded with weights_only).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taggers.errors import ModelLoadError, ModelNotFoundError, TaggerError

CONFIG_NAMES = ("open_clip_config.json",)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_CONFIG = "open_clip_config.json"
IMPORT_HINT = "curator models import DIR --name {name}"


@dataclass(frozen=True, slots=True)
class ClipFiles:
    """Where one CLIP model's architecture and weights come from."""

    name: str  # the spec as the user wrote it, made file-name safe for caches
    arch: str | None  # built-in open_clip architecture, when the config is not a file
    config_path: Path | None  # architecture JSON, when not built in
    weights_path: Path
    source: str  # "path" | "models_dir" | "hub_cache" | "hub"
    # From open_clip's pretrained table: e.g. quick_gelu for OpenAI weights, their mean/std.
    model_overrides: dict[str, Any] = field(default_factory=dict)
    preprocess_overrides: dict[str, Any] = field(default_factory=dict)


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def safe_name(spec: str) -> str:
    return spec.replace("hf-hub:", "").replace("/", "_").replace("@", "_").replace(":", "_")


def _local_dir(directory: Path) -> tuple[Path, Path]:
    """(config, weights) in a folder, or a one-line error naming what is missing."""
    configs = [directory / n for n in CONFIG_NAMES if (directory / n).is_file()]
    if not configs:
        configs = sorted(p for p in directory.glob("*.json") if p.is_file())
    weights = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES
    )
    if not configs:
        raise ModelNotFoundError(
            f"{directory / CONFIG_NAMES[0]} is missing: a CLIP model folder needs its "
            "architecture config JSON beside the weights"
        )
    if not weights:
        raise ModelNotFoundError(
            f"{directory / HF_WEIGHTS[0]} is missing: no weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}) in {directory}"
        )
    if len(weights) > 1:
        safetensors = [p for p in weights if p.suffix == ".safetensors"]
        if len(safetensors) != 1:
            names = ", ".join(p.name for p in weights)
            raise ModelLoadError(f"{directory} holds several weights files ({names}); keep one")
        weights = safetensors
    return configs[0], weights[0]


def _hub_file(repo: str, filenames: tuple[str, ...], *, local_only: bool, cache_dir) -> Path:
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for filename in filenames:
        try:
            return Path(
                hf_hub_download(repo, filename, cache_dir=cache_dir, local_files_only=local_only)
            )
        except Exception as exc:  # noqa: BLE001 - try the next name, report the last failure
            last = exc
    raise last or FileNotFoundError(repo)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def resolve_clip(
    spec: str,
    *,
    models_dir: Path,
    offline: bool | None = None,
    cache_dir: Path | None = None,
) -> ClipFiles:
    """Find a CLIP model's files; see the module docstring for the order."""
    path = Path(spec).expanduser()
    if path.is_dir():
        config, weights = _local_dir(path)
        return ClipFiles(path.resolve().name, None, config, weights, "path")
    if path.is_file():
        raise ModelLoadError(f"{spec}: give the folder holding the config JSON and the weights")
    local = Path(models_dir) / safe_name(spec)
    if local.is_dir():
        config, weights = _local_dir(local)
        return ClipFiles(safe_name(spec), None, config, weights, "models_dir")

    if spec.startswith("hf-hub:"):
        repo = spec.removeprefix("hf-hub:")
        wanted = (HF_CONFIG,)
        weights_names = HF_WEIGHTS
        arch = None
        overrides, preprocess = {}, {}
    else:
        arch, sep, tag = spec.partition("/")
        if not sep or not tag:
            raise ModelNotFoundError(
                f"unknown CLIP model {spec!r}: use ARCH/PRETRAINED (e.g. ViT-L-14/openai), "
                "hf-hub:ORG/REPO, or a folder with a config JSON and weights"
            )
        import open_clip

        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg:
            raise ModelNotFoundError(
                f"unknown CLIP model {spec!r}: open_clip has no pretrained {tag!r} for {arch!r} "
                "(see open_clip.list_pretrained())"
            )
        overrides = {"quick_gelu": True} if cfg.get("quick_gelu") else {}
        preprocess = {
            k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg
        }
        hub = cfg.get("hf_hub", "")
        if not hub:
            raise ModelNotFoundError(
                f"CLIP model {spec!r} has no hub copy; download its weights and put them with "
                f"the config in {local}"
            )
        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub[:-1], "")
        wanted = ()
        weights_names = (filename,) if filename else HF_WEIGHTS

    def fetch(local_only: bool) -> tuple[Path | None, Path]:
        config = (
            _hub_file(repo, wanted, local_only=local_only, cache_dir=cache_dir) if wanted else None
        )
        return config, _hub_file(repo, weights_names, local_only=local_only, cache_dir=cache_dir)

    try:
        config, weights = fetch(True)
        return ClipFiles(safe_name(spec), arch, config, weights, "hub_cache", overrides, preprocess)
    except Exception:  # noqa: BLE001 - a cache miss falls through to the download
        pass
    if _offline(offline):
        reason = "hub downloads are off (HF_HUB_OFFLINE=1 or offline mode)"
    else:
        try:
            config, weights = fetch(False)
            return ClipFiles(safe_name(spec), arch, config, weights, "hub", overrides, preprocess)
        except Exception as exc:  # noqa: BLE001 - network and hub errors become one line
            reason = f"the download failed ({_first_line(exc)})"
    raise ModelNotFoundError(
        f"CLIP model {spec!r} not found: not in {local}, not in the Hugging Face cache, and "
        f"{reason}. Fetch {' or '.join(weights_names)} from the hub repository {repo} "
        f"and run `{IMPORT_HINT.format(name=safe_name(spec))}`"
    )


def weights_revision(path: Path) -> str:
    """A short hash of the weights file's size and first and last MiB.

    Hashing every byte of a multi-gigabyte checkpoint on each load costs seconds;
    the size plus both ends tells releases apart.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read())
    return digest.hexdigest()[:12]


def _read_model_cfg(config_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_path}: not a readable JSON config ({exc})") from exc
    if "model_cfg" in data:
        return dict(data["model_cfg"]), dict(data.get("preprocess_cfg", {}))
    if "vision_cfg" not in data or "text_cfg" not in data:
        raise ModelLoadError(f"{config_path}: an open_clip config needs vision_cfg and text_cfg")
    return data, {}


def pick_device(device: str) -> str:
    if device in ("auto", "", None):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise TaggerError(f"CLIP models run on cpu or cuda, not {device!r}")
    return device


@dataclass
class ClipBundle:
    """An open_clip model, its image transform and tokenizer, loaded on first use.

    Pickling drops the loaded weights, so a bundle can travel to decode workers,
    which only need `transform`.
    """

    files: ClipFiles
    device: str = "auto"
    threads: int | None = None
    _model: Any = field(default=None, repr=False)
    _transform: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _cfg: tuple[dict[str, Any], dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def revision(self) -> str:
        return weights_revision(self.files.weights_path)

    def _config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._cfg is None:
            if self.files.config_path is not None:
                self._cfg = _read_model_cfg(self.files.config_path)
            else:
                import open_clip

                cfg = open_clip.get_model_config(self.files.arch)
                if cfg is None:
                    raise ModelLoadError(f"open_clip has no architecture {self.files.arch!r}")
                self._cfg = ({**cfg, **self.files.model_overrides}, {})
        return self._cfg

    @property
    def input_size(self) -> int:
        size = self._config()[0]["vision_cfg"].get("image_size", 224)
        return int(max(size) if isinstance(size, (list, tuple)) else size)

    @property
    def transform(self) -> Any:
        if self._transform is None:
            from open_clip.transform import (
                PreprocessCfg,
                image_transform_v2,
                merge_preprocess_dict,
            )

            model_cfg, pp = self._config()
            base = PreprocessCfg(size=self.input_size)
            merged = merge_preprocess_dict(
                base,
                {**model_cfg.get("preprocess_cfg", {}), **pp, **self.files.preprocess_overrides},
            )
            self._transform = image_transform_v2(PreprocessCfg(**merged), is_train=False)
        return self._transform

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

            text_cfg = self._config()[0]["text_cfg"]
            context = text_cfg.get("context_length", 77)
            hf_name = text_cfg.get("hf_tokenizer_name")
            if hf_name:
                self._tokenizer = HFTokenizer(
                    hf_name, context_length=context, **text_cfg.get("tokenizer_kwargs", {})
                )
            else:
                self._tokenizer = SimpleTokenizer(
                    context_length=context, **text_cfg.get("tokenizer_kwargs", {})
                )
        return self._tokenizer

    @property
    def torch_device(self) -> str:
        return pick_device(self.device)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        import open_clip
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        device = self.torch_device
        precision = "fp16" if device.startswith("cuda") else "fp32"
        model_cfg, _ = self._config()
        cfg = {k: v for k, v in model_cfg.items() if k not in ("preprocess_cfg", "custom_text")}
        try:
            if "hf_model_name" in cfg.get("text_cfg", {}) or model_cfg.get("custom_text"):
                model = open_clip.CustomTextCLIP(**cfg)
            else:
                model = open_clip.CLIP(**cfg)
            open_clip.load_checkpoint(model, str(self.files.weights_path), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a bad file becomes one clear line
            raise ModelLoadError(
                f"cannot load CLIP weights {self.files.weights_path}: {_first_line(exc)}"
            ) from exc
        model = model.to(device=device, dtype=torch.float16 if precision == "fp16" else None)
        model.eval()
        model.requires_grad_(False)
        return model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state


def load_clip(
    spec: str,
    *,
    models_dir: Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    offline: bool | None = None,
    cache_dir: Path | None = None,
) -> ClipBundle:
    """Resolve `spec` (see module docstring) into a lazily loaded `ClipBundle`."""
    if models_dir is None:
        from taggers.registry import default_models_dir

        models_dir = default_models_dir()
    files = resolve_clip(spec, models_dir=models_dir, offline=offline, cache_dir=cache_dir)
    return ClipBundle(files, device=device, threads=threads)
