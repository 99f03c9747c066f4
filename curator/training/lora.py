"""LoRA training with peft, saved in kohya sd-scripts' key layout with its `ss_` metadata.

The layers are the ones sd-scripts' `networks/lora.py` trains: every Linear and 1x1
Conv2d inside the UNet's transformer blocks (attention, feed-forward, `proj_in`,
`proj_out`) and inside the text encoder's attention and MLP; with `conv_dim` (LoCon, its
`--network_args conv_dim=N`) also the ResNet blocks' 3x3 convolutions, the down- and
upsamplers, and those blocks' time-embedding and 1x1 shortcut layers (at the network rank).
peft injects them (its `lora_A` is kohya's `lora_down`, `lora_B` its `lora_up`, and both
scale by alpha / rank). The saved names are what sd-scripts builds: `lora_unet_` or
`lora_te_` followed by the module's path in the diffusers UNet / transformers CLIP text
encoder with every `.` replaced by `_`
(`lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q`), each with
`.lora_down.weight`, `.lora_up.weight` and a scalar `.alpha`. A1111's Lora extension and
diffusers' `load_lora_weights` read the same names.

SDXL (a diffusers SDXL folder or single file as --base) trains the same layers; its
names are the ones sd-scripts gives SDXL (`lora_unet_input_blocks_...`, `lora_te1_...`,
`lora_te2_...`, see `curator.training.sdxl`) and `ss_base_model_version` is sd-scripts'
SDXL value.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.training import sdxl
from curator.training.loop import (
    Method,
    TrainOptions,
    TrainResult,
    base_model_hashes,
    batches_per_step,
    load_base,
    prepare_data,
    run_loop,
    token_ids,
    train_recorded,
)
from curator.training.training_state import is_state

# sd-scripts' target modules: LoRA goes on the Linear and Conv2d layers inside them
UNET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")  # with conv_dim
TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
# sd-scripts records the optimizer's class path
OPTIMIZER_NAMES = {
    "adamw": "torch.optim.adamw.AdamW",
    "adamw8bit": "bitsandbytes.optim.adamw.AdamW8bit",
}


@dataclass
class LoraOptions(TrainOptions):
    rank: int = 4  # kohya's network_dim
    alpha: float = 1.0  # kohya's network_alpha (its default is 1)
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None  # None: the same as --lr
    conv_dim: int | None = None  # kohya's conv_dim: LoRA on 3x3 convolutions too (LoCon)
    conv_alpha: float | None = None  # kohya's conv_alpha (1 when conv_dim is set)
    resume: str | None = None  # a LoRA file this trainer saved: its weights and step


def kohya_name(prefix: str, module_path: str) -> str:
    """sd-scripts' LoRA module name: prefix and module path joined, '.' → '_'."""
    return f"{prefix}.{module_path}".replace(".", "_")


def text_encoder_path_prefix(text_encoder: Any) -> str:
    """transformers 5 flattened CLIPTextModel (`encoder.layers.0...`); sd-scripts and
    A1111 run on transformers 4, whose module paths start with `text_model.`."""
    return "" if hasattr(text_encoder, "text_model") else "text_model."


def lora_targets(
    model: Any, blocks: tuple[str, ...], conv_blocks: tuple[str, ...] = ()
) -> dict[str, bool]:
    """The module paths sd-scripts puts LoRA on, each with whether it is a convolution
    wider than 1x1 (those take conv_dim): every Linear and Conv2d inside a module whose
    class is one of `blocks` or `conv_blocks`, where only `conv_blocks` admit wide ones."""
    import torch

    targets: dict[str, bool] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind not in blocks and kind not in conv_blocks:
            continue
        for child_name, child in module.named_modules():
            if not isinstance(child, torch.nn.Linear | torch.nn.Conv2d) or not child_name:
                continue
            wide = isinstance(child, torch.nn.Conv2d) and tuple(child.kernel_size) != (1, 1)
            if wide and kind not in conv_blocks:
                continue
            targets[f"{name}.{child_name}" if name else child_name] = wide
    return targets


def lora_config(
    targets: dict[str, bool],
    rank: int,
    alpha: float,
    conv_dim: int | None = None,
    conv_alpha: float = 1.0,
):
    """peft's config for `targets`: the network rank and alpha, conv_dim and conv_alpha
    for the wide convolutions (peft reads its patterns as regular expressions)."""
    import re

    from peft import LoraConfig

    wide = [re.escape(path) for path, is_wide in targets.items() if is_wide]
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        rank_pattern=dict.fromkeys(wide, conv_dim or rank),
        alpha_pattern=dict.fromkeys(wide, conv_alpha),
    )


def lora_state_dict(
    model: Any,
    prefix: str,
    path_prefix: str = "",
    rename: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Every peft LoRA layer in `model` as kohya keys (float32, contiguous, on the CPU),
    each with its own alpha; `rename` maps a module path to the one sd-scripts' model has."""
    import torch
    from peft.tuners.lora import LoraLayer

    state = {}
    for path, module in model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        name = kohya_name(prefix, path_prefix + (rename(path) if rename else path))
        down = module.lora_A["default"].weight.detach()
        up = module.lora_B["default"].weight.detach()
        state[f"{name}.lora_down.weight"] = down.float().cpu().contiguous()
        state[f"{name}.lora_up.weight"] = up.float().cpu().contiguous()
        state[f"{name}.alpha"] = torch.tensor(float(module.lora_alpha["default"]))
    return state


def addnet_hashes(tensors: dict[str, Any], metadata: dict[str, str]) -> tuple[str, str]:
    """sd-scripts' `sshs_model_hash` (sha256 of the tensor data after the header) and
    `sshs_legacy_hash` (sha256 of 64 KiB at 1 MiB, 8 digits), computed as its
    `precalculate_safetensors_hashes` does: over the file with only `ss_` metadata."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header :]).hexdigest()
    legacy = io.BytesIO(data)
    legacy.seek(0x100000)
    return model_hash, hashlib.sha256(legacy.read(0x10000)).hexdigest()[:8]


def model_version(pipe: Any) -> tuple[bool, str, bool]:
    """(v2, sd-scripts' `ss_base_model_version`, v-parameterization) of the base: SD 2.x
    has a 1024-wide OpenCLIP text encoder; SDXL has two encoders."""
    v_pred = pipe.scheduler.config.get("prediction_type") == "v_prediction"
    if sdxl.is_sdxl(pipe):
        return False, sdxl.BASE_MODEL_VERSION, v_pred
    v2 = pipe.text_encoder.config.hidden_size == 1024
    return v2, ("sd_v2" if v2 else "sd_v1") + ("_v" if v_pred else ""), v_pred


def kohya_metadata(
    options: LoraOptions,
    dataset: Any,
    step: int,
    started: float,
    data_hash: str,
    version: tuple[bool, str, bool] = (False, "sd_v1", False),
) -> dict[str, str]:
    """The `ss_` keys sd-scripts writes that describe this network and its training."""
    old_hash, new_hash = base_model_hashes(options.base)
    sizes = sorted(dataset.buckets)
    per_epoch = len(dataset.epoch_batches(options.batch_size, _Fixed()))
    dirs = {
        folder: {
            "n_repeats": repeats,
            "img_count": sum(e.folder == folder for e in dataset.examples),
        }
        for folder, repeats in dataset.repeats.items()
    }
    values: dict[str, Any] = {
        "ss_session_id": str(options.seed),
        "ss_training_started_at": started,
        "ss_output_name": options.name or "lora",
        "ss_learning_rate": options.lr,
        "ss_text_encoder_lr": options.text_encoder_lr or options.lr,
        "ss_unet_lr": options.lr,
        "ss_num_train_images": dataset.train_count,
        "ss_num_reg_images": dataset.reg_count,
        "ss_num_batches_per_epoch": per_epoch,
        # each optimizer step takes accumulation × processes batches
        "ss_num_epochs": -(-options.steps * batches_per_step(options) // per_epoch),
        "ss_prior_loss_weight": options.prior_loss_weight,
        "ss_batch_size_per_device": options.batch_size,
        "ss_total_batch_size": options.batch_size * options.gradient_accumulation_steps,
        "ss_max_train_steps": options.steps,
        "ss_steps": step,
        "ss_gradient_accumulation_steps": options.gradient_accumulation_steps,
        "ss_lr_scheduler": options.lr_scheduler,
        "ss_lr_warmup_steps": options.lr_warmup_steps,
        "ss_optimizer": OPTIMIZER_NAMES[options.optimizer],
        "ss_network_module": "networks.lora",
        "ss_network_dim": options.rank,
        "ss_network_alpha": options.alpha,
        "ss_network_train_unet_only": not options.train_text_encoder,
        "ss_network_train_text_encoder_only": False,
        # sd-scripts writes its --network_args (strings) only when some were given
        **({"ss_network_args": json.dumps(network_args(options))} if options.conv_dim else {}),
        "ss_mixed_precision": options.mixed_precision,
        "ss_gradient_checkpointing": options.gradient_checkpointing,
        "ss_full_fp16": False,
        "ss_v2": version[0],
        "ss_base_model_version": version[1],
        "ss_v_parameterization": version[2],
        "ss_sd_model_name": Path(options.base).name,
        "ss_sd_model_hash": old_hash,
        "ss_new_sd_model_hash": new_hash,
        "ss_seed": options.seed,
        "ss_cache_latents": options.cache_latents,
        "ss_resolution": f"({max(s[0] for s in sizes)}, {max(s[1] for s in sizes)})",
        "ss_enable_bucket": True,
        "ss_min_bucket_reso": min(min(s) for s in sizes),
        "ss_max_bucket_reso": max(max(s) for s in sizes),
        "ss_bucket_info": json.dumps(dataset.bucket_info()),
        "ss_tag_frequency": json.dumps(dataset.tag_frequency()),
        "ss_dataset_dirs": json.dumps(dirs),
        "ss_shuffle_caption": dataset.shuffle_caption,
        "ss_keep_tokens": dataset.keep_tokens,
        "ss_caption_dropout_rate": 0.0,
        "ss_max_token_length": None,
        "ss_clip_skip": None,
        "ss_noise_offset": options.noise_offset or None,
        "ss_min_snr_gamma": options.min_snr_gamma or None,
        "ss_training_comment": f"curator dataset sha256 {data_hash}",
        "ss_dataset_hash": data_hash,
    }
    return {k: str(v) for k, v in values.items()}


def network_args(options: LoraOptions) -> dict[str, str]:
    """sd-scripts' `network_args` for this network: LoCon's conv_dim and conv_alpha."""
    if not options.conv_dim:
        return {}
    return {"conv_dim": str(options.conv_dim), "conv_alpha": f"{conv_alpha(options):g}"}


def conv_alpha(options: LoraOptions) -> float:
    return options.conv_alpha if options.conv_alpha is not None else 1.0


class _Fixed:
    """A stand-in random source for counting batches (no shuffling needed)."""

    def shuffle(self, items: list) -> None:
        pass


def save_lora(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    model_hash, legacy_hash = addnet_hashes(tensors, metadata)
    metadata = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".part")
    save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(path)


def train_lora(options: LoraOptions, catalog: Any = None) -> TrainResult:
    """Train a LoRA on the kohya DreamBooth folder `options.data`; see the module note."""
    if options.rank < 1:
        raise UsageError("--rank must be at least 1")
    if options.alpha <= 0:
        raise UsageError("--alpha must be positive")
    if options.conv_dim is not None and options.conv_dim < 1:
        raise UsageError("--conv-dim must be at least 1")
    if options.conv_alpha is not None and options.conv_alpha <= 0:
        raise UsageError("--conv-alpha must be positive")
    if options.conv_alpha is not None and not options.conv_dim:
        raise UsageError("--conv-alpha needs --conv-dim")
    dataset = prepare_data(options, catalog=catalog)
    name = options.name or "lora"
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if options.conv_dim else ())
    extra = {"network": "lora", "targets": list(blocks), **network_args(options)}
    return train_recorded(
        catalog, "lora", options, dataset, extra, lambda: _train(options, dataset, name)
    )


def _train(options: LoraOptions, dataset: Any, name: str) -> TrainResult:
    import torch
    from peft import inject_adapter_in_model

    model = load_base(options)
    pipe = model.pipeline
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if sdxl.is_sdxl(pipe) else [])
    for part in (pipe.unet, pipe.vae, *encoders):
        part.requires_grad_(False)
    torch.manual_seed(options.seed)  # the same LoRA initialisation for the same seed
    conv_blocks = UNET_CONV_BLOCKS if options.conv_dim else ()
    unet_targets = lora_targets(pipe.unet, UNET_BLOCKS, conv_blocks)
    pipe.unet.add_adapter(
        lora_config(
            unet_targets, options.rank, options.alpha, options.conv_dim, conv_alpha(options)
        )
    )
    groups = [{"params": [p for p in pipe.unet.parameters() if p.requires_grad], "lr": options.lr}]
    if options.train_text_encoder:
        for encoder in encoders:
            # peft directly: transformers' own `add_adapter` wants a newer peft than diffusers
            targets = lora_targets(encoder, TEXT_ENCODER_BLOCKS)
            inject_adapter_in_model(lora_config(targets, options.rank, options.alpha), encoder)
            groups.append(
                {
                    "params": [p for p in encoder.parameters() if p.requires_grad],
                    "lr": options.text_encoder_lr or options.lr,
                }
            )
    from_file = options.resume and not is_state(options.resume)  # else the loop resumes
    start_step = _resume(options, pipe) if from_file else 0
    pipe.unet.train()
    started = time.time()
    data_hash = dataset.content_hash()
    device = str(pipe.device)
    version = model_version(pipe)

    def encode(captions: list[str]):
        if sdxl.is_sdxl(pipe):
            return sdxl.encode(pipe, captions, device, grad=options.train_text_encoder)
        ids = token_ids(pipe.tokenizer, captions, device)
        if options.train_text_encoder:
            return pipe.text_encoder(ids)[0]
        with torch.no_grad():
            return pipe.text_encoder(ids)[0]

    def save(path: Path, step: int) -> None:
        tensors = {}
        for part, prefix, path_prefix, rename in lora_parts(pipe, options.train_text_encoder):
            tensors.update(lora_state_dict(part, prefix, path_prefix, rename))
        save_lora(
            path, tensors, kohya_metadata(options, dataset, step, started, data_hash, version)
        )

    method = Method("lora", groups, encode, save)
    return run_loop(pipe, dataset, options, method, name, start_step=start_step)


def lora_parts(
    pipe: Any, text_encoders: bool
) -> list[tuple[Any, str, str, Callable[[str], str] | None]]:
    """(model, kohya prefix, path prefix, renaming) for each part that carries LoRA layers:
    the UNet, and the text encoder(s) when they train (SDXL: `lora_te1`, `lora_te2`)."""
    if not sdxl.is_sdxl(pipe):
        parts = [(pipe.unet, UNET_PREFIX, "", None)]
        if text_encoders:
            te = pipe.text_encoder
            parts.append((te, TEXT_ENCODER_PREFIX, text_encoder_path_prefix(te), None))
        return parts
    layers = pipe.unet.config.layers_per_block
    layers = layers if isinstance(layers, int) else layers[0]

    def rename(path: str) -> str:
        return sdxl.sai_unet_path(path, layers)

    parts = [(pipe.unet, UNET_PREFIX, "", rename)]
    if text_encoders:
        for encoder, prefix in zip(
            (pipe.text_encoder, pipe.text_encoder_2), sdxl.TEXT_ENCODER_PREFIXES, strict=True
        ):
            parts.append((encoder, prefix, text_encoder_path_prefix(encoder), None))
    return parts


def _resume(options: LoraOptions, pipe: Any) -> int:
    """Load a saved LoRA's weights into the fresh layers; return the step it was saved at.

    The file holds weights, not optimizer moments: AdamW's moments start again, as with
    sd-scripts' `--network_weights`; the step count and learning-rate schedule continue.
    """
    import torch
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    path = Path(options.resume).expanduser()
    if not path.is_file():
        raise UsageError(f"no such LoRA file to resume from: {path}")
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    step = int(meta.get("ss_steps", "0") or 0)
    if not 0 < step < options.steps:
        raise UsageError(
            f"{path.name} was saved at step {step}; --steps must be more than that to resume"
        )
    expected = set()
    with torch.no_grad():
        for model, prefix, path_prefix, rename in lora_parts(pipe, options.train_text_encoder):
            for module_path, module in model.named_modules():
                if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
                    continue
                renamed = rename(module_path) if rename else module_path
                name = kohya_name(prefix, path_prefix + renamed)
                expected.add(name)
                down = state.get(f"{name}.lora_down.weight")
                up = state.get(f"{name}.lora_up.weight")
                alpha = state.get(f"{name}.alpha")
                target_down = module.lora_A["default"].weight
                if down is None or up is None or down.shape != target_down.shape:
                    raise UsageError(
                        f"{path.name} does not match this training (rank, --conv-dim, layers "
                        "or --train-text-encoder differ)"
                    )
                want = float(module.lora_alpha["default"])
                if alpha is not None and abs(float(alpha) - want) > 1e-6:
                    option = "--conv-alpha" if down.dim() == 4 and down.shape[-1] > 1 else "--alpha"
                    raise UsageError(f"{path.name} has alpha {float(alpha):g}; pass {option} so")
                target_down.copy_(down)
                module.lora_B["default"].weight.copy_(up)
    if {key.split(".")[0] for key in state} != expected:
        raise UsageError(f"{path.name} has layers this training does not (--train-text-encoder?)")
    return step
