"""Hypernetworks inside the UNet: an attention processor that sends the key and value
inputs of every attention through the hypernetworks' MLPs.

A1111 patches every attention (self- and cross-attention) and picks the MLPs by the
context's width, so the self-attention of blocks 320, 640 and 1280 channels wide uses
the layers of those widths and cross-attention those of the text encoder's (768 for
SD 1.x). The processor is diffusers' `AttnProcessor2_0` with that one change; diffusers
has no hook between the context and the key / value projections, hence a processor.
"""

from __future__ import annotations

from typing import Any

from curator.generation.hypernetworks import Hypernetwork


class HypernetworkAttnProcessor:
    """diffusers' scaled-dot-product attention with the key and value inputs sent
    through the hypernetworks' MLPs for the context's width, one network after the
    other (A1111's `apply_hypernetworks`). Everything else is `AttnProcessor2_0`."""

    def __init__(self, networks: list[Hypernetwork]):
        self.networks = networks

    def contexts(self, context):
        context_k = context_v = context
        for network in self.networks:
            pair = network.layers.get(context_k.shape[-1])
            if pair is None:
                continue
            if pair[0].linear[0].weight.device != context_k.device:
                network.to(context_k.device)  # model CPU offload moves the UNet per call
            dtype = context_k.dtype
            context_k = pair[0](context_k.float()).to(dtype)
            context_v = pair[1](context_v.float()).to(dtype)
        return context_k, context_v

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        *args: Any,
        **kwargs: Any,
    ):
        import torch.nn.functional as F

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        context_k, context_v = self.contexts(encoder_hidden_states)
        key = attn.to_k(context_k)
        value = attn.to_v(context_v)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attach(unet: Any, networks: list[Hypernetwork]) -> dict[str, Any] | None:
    """Route every attention of `unet` through `networks`; returns the processors to give
    back to `detach` (None when there is nothing to attach)."""
    if not networks:
        return None
    device = next(unet.parameters()).device
    for network in networks:
        network.to(device)
    previous = dict(unet.attn_processors)
    unet.set_attn_processor(HypernetworkAttnProcessor(networks))
    return previous


def detach(unet: Any, previous: dict[str, Any] | None) -> None:
    if previous is not None:
        unet.set_attn_processor(previous)
