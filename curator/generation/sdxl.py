"""SDXL text conditioning as A1111 computes it.

Both encoders see the same 75-token chunks with A1111's weighting (scale, then restore
the mean), each on its own outputs: CLIP-L's and OpenCLIP-G's penultimate hidden states,
without the final layer norm, concatenated per token (768 + 1280 wide). The pooled
vector is OpenCLIP-G's projected output for the first chunk, unweighted. A negative
prompt that is empty everywhere is all zeros, as A1111 makes it for SDXL. Clip skip
above 1 picks CLIP-L's hidden state `-clip_skip` (A1111's "Clip skip for SDXL CLIP-L"
behaviour); OpenCLIP-G always uses its penultimate layer, as in A1111.

`time_ids` are SDXL's size conditioning: original size, crop's top-left corner, target
size, each (height, width), as A1111 passes them.
"""

from __future__ import annotations

from typing import Any

from curator.generation.conditioning import ScheduledConditioning, encode_texts
from curator.generation.embeddings import load_embeddings
from curator.generation.prompt_schedule import prompt_schedule


def is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None and hasattr(pipe, "tokenizer_2")


def load_sdxl_embeddings(pipe: Any, folders: list[str], allow_pickle: bool = False):
    """(CLIP-L, OpenCLIP-G) embedding tables from SDXL embedding files (`clip_l`/`clip_g`)."""
    return tuple(
        load_embeddings(
            folders,
            tokenizer,
            encoder.get_input_embeddings().weight.shape[1],
            allow_pickle,
            key=key,
        )
        for encoder, tokenizer, key in (
            (pipe.text_encoder, pipe.tokenizer, "clip_l"),
            (pipe.text_encoder_2, pipe.tokenizer_2, "clip_g"),
        )
    )


def encode_sdxl(
    pipe: Any,
    texts: list[str],
    clip_skip: int = 1,
    used: dict | None = None,
    embeddings: tuple | None = None,
):
    """([n, 77*k, 2048], [n, 1280]) for `texts`; `embeddings` from `load_sdxl_embeddings`."""
    import torch

    l_db, g_db = embeddings or (None, None)
    first = encode_texts(
        pipe.text_encoder,
        pipe.tokenizer,
        texts,
        embeddings=l_db,
        used=used,
        layer=-clip_skip if clip_skip > 1 else -2,
    )
    pooled: list = []
    second = encode_texts(
        pipe.text_encoder_2,
        pipe.tokenizer_2,
        texts,
        embeddings=g_db,
        used=used,
        layer=-2,
        pooled=pooled,
    )
    return torch.cat([first, second.to(first.dtype)], dim=-1), pooled[0].to(first.dtype)


def scheduled_sdxl(
    pipe: Any,
    prompt: str,
    steps: int,
    clip_skip: int,
    used: dict,
    negative: bool = False,
    embeddings: tuple | None = None,
) -> ScheduledConditioning:
    """Per-step (embeddings [1, T, 2048], pooled [1, 1280]) for `prompt`."""
    schedule = prompt_schedule(prompt, steps)
    texts = [text for _, text in schedule]
    embeds, pooled = encode_sdxl(pipe, texts, clip_skip, used, embeddings)
    if negative and all(text == "" for text in texts):
        embeds, pooled = embeds * 0, pooled * 0
    return ScheduledConditioning(
        [(end, (embeds[i : i + 1], pooled[i : i + 1])) for i, (end, _) in enumerate(schedule)]
    )


def time_ids(
    width: int,
    height: int,
    original: tuple[int, int] | None = None,
    crop: tuple[int, int] = (0, 0),
) -> dict[str, tuple[int, int]]:
    """The SDXL pipeline's size-conditioning arguments, (height, width) order."""
    return {
        "original_size": original or (height, width),
        "crops_coords_top_left": crop,
        "target_size": (height, width),
    }
