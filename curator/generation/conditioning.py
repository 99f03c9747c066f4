"""Text conditioning as A1111 computes it, and the per-step schedule of it.

Each 77-token chunk goes through the text encoder (stopping `clip_skip` layers early and
applying the final layer norm, as A1111's "Clip skip"); token weights multiply the output
and the original mean is restored (A1111's "Original" emphasis; the mean is taken over
the whole batch of texts encoded together, as A1111 encodes a prompt's schedule in one
batch). Chunks are concatenated along the token axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curator.generation.prompt_schedule import prompt_schedule
from curator.generation.tokenizer import Chunk, tokenize_prompt


@dataclass
class ScheduledConditioning:
    """(last step, embeddings [1, 77*k, C]); a step uses the first entry ending at or after it."""

    entries: list[tuple[int, Any]]

    def at(self, step: int):
        for end, cond in self.entries:
            if step <= end:
                return cond
        return self.entries[-1][1]

    @property
    def switch_steps(self) -> list[int]:
        return [end for end, _ in self.entries[:-1]]


def _empty_chunk(tokenizer: Any) -> Chunk:
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    return Chunk([start] + [end] * 76, [1.0] * 77)


def encode_texts(
    text_encoder: Any,
    tokenizer: Any,
    texts: list[str],
    clip_skip: int = 1,
    embeddings: Any = None,
    used: dict | None = None,
    *,
    layer: int | None = None,
    pooled: list | None = None,
):
    """[len(texts), 77*k, C] embeddings; shorter prompts are filled with empty chunks.

    Textual-inversion `embeddings` found in the texts replace token embeddings; their
    names and hashes are added to `used`. `layer` picks a hidden state as it is, without
    the final layer norm (SDXL's penultimate layers: -2), instead of `clip_skip`; the
    projected pooled output of the first chunk (SDXL's second encoder) is appended to
    `pooled`, as A1111 takes it.
    """
    import torch

    tokenized = [tokenize_prompt(tokenizer, text, embeddings=embeddings).chunks for text in texts]
    count = max(len(chunks) for chunks in tokenized)
    device = text_encoder.device
    outputs = []
    for index in range(count):
        batch = [c[index] if index < len(c) else _empty_chunk(tokenizer) for c in tokenized]
        ids = torch.tensor([_padded(c.tokens, tokenizer) for c in batch], device=device)
        weights = torch.tensor([c.weights for c in batch], device=device)
        fixes = [c.fixes for c in batch]
        for chunk_fixes in fixes:
            for _, embedding in chunk_fixes:
                if used is not None:
                    used[embedding.name] = embedding.short_hash
        hook = None
        if any(fixes):
            token_layer = text_encoder.get_input_embeddings()
            hook = token_layer.register_forward_hook(
                lambda _m, _i, out, f=fixes: _apply_fixes(out, f)
            )
        try:
            with torch.no_grad():
                out = text_encoder(ids, output_hidden_states=clip_skip > 1 or layer is not None)
        finally:
            if hook is not None:
                hook.remove()
        if pooled is not None and index == 0:
            pooled.append(out.text_embeds.float())
        with torch.no_grad():
            if layer is not None:
                z = out.hidden_states[layer]
            elif clip_skip > 1:
                z = out.hidden_states[-clip_skip]
                z = _final_layer_norm(text_encoder)(z)
            else:
                z = out.last_hidden_state
            z = z.float()
            mean = z.mean()
            z = z * weights.unsqueeze(-1)
            new_mean = z.mean()
            # A1111 divides unconditionally; a zero mean (all weights 1 on an encoder whose
            # outputs average to exactly 0) would turn the whole conditioning into NaN.
            if new_mean != 0 and torch.isfinite(new_mean):
                z = z * (mean / new_mean)
        outputs.append(z.to(text_encoder.dtype))
    return torch.cat(outputs, dim=1)


def _padded(tokens: list[int], tokenizer: Any) -> list[int]:
    """After the first end token, the tokenizer's pad token where it differs from the end
    token (OpenCLIP's SD 2.x and SDXL encoders pad with 0), as A1111's `process_tokens`."""
    pad, end = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None or pad == end or end not in tokens:
        return tokens
    first = tokens.index(end)
    return tokens[: first + 1] + [pad] * (len(tokens) - first - 1)


def _apply_fixes(token_embeddings, fixes):
    """Put embedding vectors in place of token embeddings (after the start token)."""
    out = token_embeddings.clone()
    for row, chunk_fixes in enumerate(fixes):
        for offset, embedding in chunk_fixes:
            count = min(out.shape[1] - offset - 1, embedding.vectors.shape[0])
            vectors = embedding.vectors[:count].to(out.device, out.dtype)
            out[row, offset + 1 : offset + 1 + count] = vectors
    return out


def _final_layer_norm(text_encoder: Any):
    """The encoder's last layer norm (transformers 5 dropped the `text_model` wrapper)."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm


def scheduled_conditioning(
    text_encoder: Any,
    tokenizer: Any,
    prompt: str,
    steps: int,
    clip_skip: int = 1,
    embeddings: Any = None,
    used: dict | None = None,
) -> ScheduledConditioning:
    schedule = prompt_schedule(prompt, steps)
    texts = [text for _, text in schedule]
    embeds = encode_texts(text_encoder, tokenizer, texts, clip_skip, embeddings, used)
    return ScheduledConditioning([(end, embeds[i : i + 1]) for i, (end, _) in enumerate(schedule)])


def pad_to_tokens(cond, length: int, empty):
    """Extend [1, T, C] to `length` tokens with copies of the empty prompt's encoding."""
    import torch

    while cond.shape[1] < length:
        cond = torch.cat([cond, empty], dim=1)
    return cond
