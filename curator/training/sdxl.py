"""What LoRA and textual-inversion training need to know about SDXL: the two text
encoders' conditioning, and the module names sd-scripts gives SDXL's layers.

sd-scripts trains SDXL on its own UNet (`library/sdxl_original_unet.py`), whose modules
carry Stability's names (`input_blocks.4.1.transformer_blocks.0.attn1.to_q`), not
diffusers' (`down_blocks.1.attentions.0...`); its LoRA files, and A1111's reading of
them, use those names: `lora_unet_input_blocks_4_1_...`, `lora_te1_...` for the CLIP
ViT-L encoder and `lora_te2_...` for OpenCLIP ViT-bigG. The renaming below is the one
sd-scripts' `make_unet_conversion_map` spells out for SDXL's two layers per block,
written for any layer count so small test models name their layers the same way.
"""

from __future__ import annotations

import re
from typing import Any

from curator.errors import UsageError

BASE_MODEL_VERSION = "sdxl_base_v1-0"  # sd-scripts' MODEL_VERSION_SDXL_BASE_V1_0
TEXT_ENCODER_PREFIXES = ("lora_te1", "lora_te2")

_DOWN = re.compile(r"^down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.")
_UP = re.compile(r"^up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.")
_MID = re.compile(r"^mid_block\.(attentions|resnets)\.(\d+)\.")
_DOWNSAMPLE = re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv$")
_UPSAMPLE = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv$")
# a diffusers ResnetBlock2D's layers in Stability's ResBlock
_RESNET_LAYERS = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def sai_unet_path(path: str, layers_per_block: int) -> str:
    """The sd-scripts (Stability) name of a diffusers SDXL UNet layer.

    With L layers per block: down block i, layer j → `input_blocks.{1 + i(L+1) + j}`, its
    downsampler → `input_blocks.{(i+1)(L+1)}.0.op`; up block i, layer j →
    `output_blocks.{i(L+1) + j}`, its upsampler → `output_blocks.{i(L+1) + L}.2.conv`
    (SDXL's upsampling blocks all have attention); the middle → `middle_block.0/1/2`.
    Attention is a layer's `.1`, its ResBlock `.0`, whose convolutions have their own names.
    """
    per_level = layers_per_block + 1
    if match := _DOWNSAMPLE.match(path):
        return f"input_blocks.{(int(match[1]) + 1) * per_level}.0.op"
    if match := _UPSAMPLE.match(path):
        return f"output_blocks.{int(match[1]) * per_level + layers_per_block}.2.conv"
    if match := _DOWN.match(path):
        block = f"input_blocks.{1 + int(match[1]) * per_level + int(match[3])}"
        kind, rest = match[2], path[match.end() :]
    elif match := _UP.match(path):
        block = f"output_blocks.{int(match[1]) * per_level + int(match[3])}"
        kind, rest = match[2], path[match.end() :]
    elif match := _MID.match(path):
        kind, rest = match[1], path[match.end() :]
        # the middle is ResBlock, attention, ResBlock
        index = 1 if kind == "attentions" else 2 * int(match[2])
        return f"middle_block.{index}." + (rest if index == 1 else _resnet_layer(path, rest))
    else:
        raise UsageError(f"no sd-scripts name for the SDXL UNet module {path}")
    if kind == "attentions":
        return f"{block}.1.{rest}"
    return f"{block}.0.{_resnet_layer(path, rest)}"


def _resnet_layer(path: str, rest: str) -> str:
    if rest not in _RESNET_LAYERS:
        raise UsageError(f"no sd-scripts name for the SDXL UNet module {path}")
    return _RESNET_LAYERS[rest]


def encode(
    pipe: Any, captions: list[str], device: str, grad: bool, tokenizers: tuple | None = None
) -> dict[str, Any]:
    """SDXL's conditioning: both encoders' penultimate hidden states side by side, and
    the second encoder's pooled projection (`time_ids` are added per batch by the loop).
    `tokenizers` replace the pipeline's two (textual inversion's, with added words)."""
    import torch

    from curator.training.loop import token_ids

    tokenizer_1, tokenizer_2 = tokenizers or (pipe.tokenizer, pipe.tokenizer_2)
    ids_1 = token_ids(tokenizer_1, captions, device)
    ids_2 = token_ids(tokenizer_2, captions, device)
    with torch.set_grad_enabled(grad):
        first = pipe.text_encoder(ids_1, output_hidden_states=True)
        second = pipe.text_encoder_2(ids_2, output_hidden_states=True)
        pooled = pooled_projection(pipe.text_encoder_2, second, ids_2, tokenizer_2.eos_token_id)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return {"encoder_hidden_states": hidden, "added_cond_kwargs": {"text_embeds": pooled}}


def pooled_projection(encoder: Any, output: Any, ids: Any, end_id: int):
    """The projected final state at each caption's first end token.

    transformers pools there itself, except for configs with the old `eos_token_id` 2
    (SDXL's published OpenCLIP-G config among them): those pool at the highest token id,
    which is an added word's id once a tokenizer has grown, not the end token's."""
    import torch

    rows = torch.arange(ids.shape[0], device=ids.device)
    positions = (ids == end_id).int().argmax(dim=-1)
    return encoder.text_projection(output.last_hidden_state[rows, positions])
