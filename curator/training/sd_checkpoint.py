"""A diffusers Stable Diffusion pipeline as one checkpoint in the original (CompVis / LDM)
key layout: the `.safetensors` file AUTOMATIC1111's web UI, sd-scripts and diffusers'
`from_single_file` load.

diffusers ships the opposite direction as a library function; this direction exists only
as scripts (diffusers' `scripts/convert_diffusers_to_original_stable_diffusion.py`,
sd-scripts' `library/model_util.py`), which hard-code SD 1.5's block counts. The rules
below are theirs, written from the model's config so that any block count converts:

- UNet (`model.diffusion_model.`): `down_blocks.i.resnets.j` → `input_blocks.{(L+1)i+j+1}.0`,
  `down_blocks.i.attentions.j` → `input_blocks.{(L+1)i+j+1}.1`, `down_blocks.i.downsamplers.0.conv`
  → `input_blocks.{(L+1)(i+1)}.0.op`; `up_blocks.i.resnets.j` → `output_blocks.{(L+1)i+j}.0`,
  attentions → `.1`, `up_blocks.i.upsamplers.0` → `output_blocks.{(L+1)i+L}.{2 if the block has
  attention else 1}`; `mid_block.resnets.j` → `middle_block.{2j}`, its attention →
  `middle_block.1`; L is `layers_per_block`. Resnet parts: norm1 → in_layers.0, conv1 →
  in_layers.2, norm2 → out_layers.0, conv2 → out_layers.3, time_emb_proj → emb_layers.1,
  conv_shortcut → skip_connection. Transformer blocks keep their names.
- VAE (`first_stage_model.`): `down_blocks.i` → `down.i` (`block.j`, `downsample`), decoder
  `up_blocks.i` → `up.{n-1-i}` (numbered the other way), mid resnets → `mid.block_{j+1}`,
  mid attention → `mid.attn_1` (`norm`, `q`, `k`, `v`, `proj_out`, weights as 1x1 convs),
  conv_shortcut → nin_shortcut, conv_norm_out → norm_out.
- Text encoder, SD 1.x (`cond_stage_model.transformer.`): the transformers CLIPTextModel
  keys under `text_model.` (transformers 5 dropped that level; it is put back).
- Text encoder, SD 2.x (`cond_stage_model.model.`): OpenCLIP names, q/k/v fused into
  `attn.in_proj_weight`; the layer diffusers drops (SD 2 uses the penultimate layer),
  `text_projection` and `logit_scale` are filled as sd-scripts fills them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_V1_PREFIX = "cond_stage_model.transformer."
TEXT_ENCODER_V2_PREFIX = "cond_stage_model.model."

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def _replace_start(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for new, old in pairs:
        if rest.startswith(new):
            return old + rest[len(new) :]
    return rest


def unet_key(key: str, config: Any) -> str:
    """One diffusers UNet key in the original layout (without `model.diffusion_model.`)."""
    per = config.layers_per_block + 1
    module, _, leaf = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"input_blocks.{per * int(m[1]) + int(m[2]) + 1}.0.{_replace_start(m[3], _RESNET)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"input_blocks.{per * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{per * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_replace_start(m[2], _RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"output_blocks.{per * int(m[1]) + int(m[2])}.0.{_replace_start(m[3], _RESNET)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"output_blocks.{per * int(m[1]) + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        block = int(m[1])
        slot = 2 if "CrossAttn" in config.up_block_types[block] else 1
        return f"output_blocks.{per * block + per - 1}.{slot}.{m[2]}"
    raise KeyError(f"UNet weight {key} has no place in the original layout")


def vae_key(key: str, config: Any) -> str:
    """One diffusers VAE key in the original layout (without `first_stage_model.`)."""
    count = len(config.up_block_types)
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        key = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
    elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        key = f"encoder.down.{m[1]}.downsample.{m[2]}"
    elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        key = f"decoder.up.{count - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
    elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        key = f"decoder.up.{count - 1 - int(m[1])}.upsample.{m[2]}"
    elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        key = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        key = f"{m[1]}.mid.attn_1.{_replace_start(m[2], _VAE_ATTENTION)}"
    key = key.replace(".conv_shortcut.", ".nin_shortcut.")
    return key.replace("conv_norm_out.", "norm_out.")


def unet_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    return {UNET_PREFIX + unet_key(k, config): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        new = vae_key(key, config)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # linear → 1x1 convolution
        out[VAE_PREFIX + new] = value
    return out


def _text_model_keys(state: dict[str, Any]) -> dict[str, Any]:
    """transformers 4 key names (`text_model.…`), without the `position_ids` buffer."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith("text_model.") else "text_model." + key] = value
    return out


def text_encoder_v1_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    return {TEXT_ENCODER_V1_PREFIX + k: v for k, v in _text_model_keys(state).items()}


def text_encoder_v2_to_ldm(state: dict[str, Any], layers: int = 24) -> dict[str, Any]:
    """transformers CLIP → OpenCLIP names under `cond_stage_model.model.`; missing layers
    up to `layers` are copies of the last one (unused: SD 2 reads the penultimate layer)."""
    import torch

    state = _text_model_keys(state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            base, rest = f"transformer.resblocks.{m[1]}.", m[2]
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj"):
                continue  # fused below with v_proj
            if rest.startswith("self_attn.v_proj."):
                leaf = rest.rsplit(".", 1)[1]
                parts = [
                    state[f"text_model.encoder.layers.{m[1]}.self_attn.{p}_proj.{leaf}"]
                    for p in ("q", "k", "v")
                ]
                out[f"{base}attn.in_proj_{leaf}"] = torch.cat(parts)
                continue
            rest = rest.replace("self_attn.out_proj.", "attn.out_proj.")
            rest = rest.replace("layer_norm1.", "ln_1.").replace("layer_norm2.", "ln_2.")
            rest = rest.replace("mlp.fc1.", "mlp.c_fc.").replace("mlp.fc2.", "mlp.c_proj.")
            out[base + rest] = value
        elif key == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = value
        else:
            raise KeyError(f"text encoder weight {key} has no place in the OpenCLIP layout")
    present = {int(k.split(".")[2]) for k in out if k.startswith("transformer.resblocks.")}
    last = max(present)
    for index in range(last + 1, layers):
        for key in [k for k in out if k.startswith(f"transformer.resblocks.{last}.")]:
            out[key.replace(f".{last}.", f".{index}.", 1)] = out[key].clone()
    width = out["token_embedding.weight"].shape[1]
    out["text_projection"] = torch.eye(width, dtype=out["token_embedding.weight"].dtype)
    out["logit_scale"] = torch.tensor(4.6052)  # ln(100), OpenCLIP's trained value
    return {TEXT_ENCODER_V2_PREFIX + k: v for k, v in out.items()}


def is_v2(pipe: Any) -> bool:
    """SD 2.x has OpenCLIP ViT-H's 1024-wide text encoder; SD 1.x CLIP ViT-L's 768."""
    return pipe.text_encoder.config.hidden_size == 1024


def pipeline_to_ldm(pipe: Any, dtype: Any = None) -> dict[str, Any]:
    """Every UNet, VAE and text-encoder weight of `pipe` under its original-layout key."""
    state = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    encoder = pipe.text_encoder.state_dict()
    convert = text_encoder_v2_to_ldm if is_v2(pipe) else text_encoder_v1_to_ldm
    state.update(convert(encoder))
    out = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


def save_sd_checkpoint(
    pipe: Any, path: Path, metadata: dict[str, str] | None = None, dtype: Any = None
) -> Path:
    """Write `pipe` as one original-layout `.safetensors` file (atomically)."""
    from safetensors.torch import save_file

    state = pipeline_to_ldm(pipe, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".part")
    save_file(state, str(temporary), metadata={k: str(v) for k, v in (metadata or {}).items()})
    temporary.replace(path)
    return path


def modelspec(pipe: Any, title: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Stability AI's model-spec header keys, as sd-scripts' `library/sai_model_spec.py`
    writes them for an original-layout checkpoint."""
    v2 = is_v2(pipe)
    v_pred = pipe.scheduler.config.get("prediction_type") == "v_prediction"
    architecture = (
        "stable-diffusion-v2-768-v"
        if v2 and v_pred
        else ("stable-diffusion-v2-512" if v2 else "stable-diffusion-v1")
    )
    values = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        # sd-scripts names this implementation for original-layout checkpoints
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.prediction_type": "v" if v_pred else "epsilon",
    }
    if extra:
        values["curator.training"] = json.dumps(extra, sort_keys=True, default=str)
    return values
