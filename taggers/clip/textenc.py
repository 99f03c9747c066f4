"""CLIP text encoding: whole texts, and many continuations of one shared prefix.

The CLIP text transformer is causal and pools at the end-of-text token, so for texts
"PREFIX, CANDIDATE" the prefix's keys and values in every layer are the same for all
candidates, and nothing after the end-of-text token matters. `PrefixEncoder` runs
the prefix once, then only each candidate's own tokens, attending to the cached
prefix; batches are cut at their longest candidate instead of the 77-token context.
The result equals encoding each full text (up to float rounding), including the
tokenizer's truncation at the context length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def text_tower(model: Any) -> Any:
    """The module holding the text transformer's parts (CLIP keeps them on itself)."""
    text = getattr(model, "text", None)
    return text if text is not None and hasattr(text, "transformer") else model


@torch.no_grad()
def encode_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], batch: int = 256
) -> torch.Tensor:
    """Normalised float32 features of `texts`, encoded whole."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch):
        tokens = tokenizer(list(texts[i : i + batch])).to(device)
        features = model.encode_text(tokens).float()
        out.append(features / features.norm(dim=-1, keepdim=True))
    if not out:
        return torch.zeros((0, model_embed_dim(model)))
    return torch.cat(out)


def model_embed_dim(model: Any) -> int:
    proj = text_tower(model).text_projection
    return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]


class PrefixEncoder:
    """Features of "PREFIX" + suffix for many suffixes, the prefix encoded once."""

    def __init__(self, model: Any, tokenizer: Any, batch: int = 512):
        self.model, self.tokenizer, self.batch = model, tokenizer, batch
        self.tower = text_tower(model)

    @staticmethod
    def supports(model: Any, tokenizer: Any) -> bool:
        """Causal CLIP text transformer with standard blocks and a BPE tokenizer."""
        from open_clip.tokenizer import SimpleTokenizer
        from open_clip.transformer import ResidualAttentionBlock

        tower = text_tower(model)
        needed = ("token_embedding", "positional_embedding", "ln_final", "transformer")
        if not all(hasattr(tower, n) for n in needed):
            return False
        if getattr(tower, "attn_mask", None) is None or getattr(tower, "cls_emb", None) is not None:
            return False
        if getattr(tower, "text_pool_type", "argmax") not in ("argmax", "eos"):
            return False
        if not isinstance(tokenizer, SimpleTokenizer) or tokenizer.reduction_fn is not None:
            return False
        blocks = tower.transformer.resblocks
        return all(
            isinstance(b, ResidualAttentionBlock)
            and not hasattr(b, "ln_1_kv")
            and isinstance(b.attn, nn.MultiheadAttention)
            and b.attn._qkv_same_embed_dim
            and b.attn.batch_first
            for b in blocks
        )

    # -- tokens ----------------------------------------------------------------------

    def prefix_tokens(self, prefix: str) -> list[int]:
        return [self.tokenizer.sot_token_id, *self.tokenizer.encode(prefix)]

    def suffix_tokens(self, suffix: str) -> list[int]:
        return list(self.tokenizer.encode(suffix))

    @staticmethod
    def joins_cleanly(prefix: str) -> bool:
        """Whether tokens(prefix + ", x") == tokens(prefix) + tokens(", x").

        The BPE splits text into runs of letters, single digits and runs of other
        symbols; a prefix ending in a letter or digit cannot merge with the comma.
        """
        stripped = prefix.rstrip()
        return not stripped or stripped[-1].isalnum()

    # -- the forward pass --------------------------------------------------------------

    def _block(
        self,
        block: Any,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attn: nn.MultiheadAttention = block.attn
        b, n, d = x.shape
        heads = attn.num_heads
        h = block.ln_1(x)
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).split(d, dim=-1)
        q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        scale = (d // heads) ** -0.5
        own = (q * scale) @ k.transpose(-1, -2)  # [b, heads, n, n]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        own = own.masked_fill(causal, float("-inf"))
        if past is None:
            weights = own.float().softmax(-1).to(q.dtype)
            out = weights @ v
        else:
            pk, pv = past  # [1, heads, p, dh]: broadcast over the batch, never copied
            prior = (q * scale) @ pk.transpose(-1, -2)
            weights = torch.cat([prior, own], dim=-1).float().softmax(-1).to(q.dtype)
            p = pk.shape[2]
            out = weights[..., :p] @ pv + weights[..., p:] @ v
        out = out.transpose(1, 2).reshape(b, n, d)
        out = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
        x = x + block.ls_1(out)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return x, (k, v)

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        tower = self.tower
        dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(dtype)
        pos = tower.positional_embedding[start : start + tokens.shape[1]].to(dtype)
        return x + pos

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        tower = self.tower
        x = tower.ln_final(x)
        proj = tower.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        x = x.float()
        return x / x.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def encode(self, prefix_ids: list[int], suffixes: Sequence[list[int]]) -> torch.Tensor:
        """Normalised features of prefix_ids + each suffix + end-of-text, truncated as
        the tokenizer truncates (the last kept token becomes end-of-text)."""
        context = self.tokenizer.context_length
        eot = self.tokenizer.eot_token_id
        p = len(prefix_ids)
        if p >= context:
            raise ValueError("prefix fills the context")
        device = self.tower.token_embedding.weight.device
        blocks = self.tower.transformer.resblocks
        x = self._embed(torch.tensor([prefix_ids], device=device), 0)
        past = []
        for block in blocks:
            x, kv = self._block(block, x, None)
            past.append(kv)
        room = context - p
        seqs = []
        for s in suffixes:
            seq = [*s, eot]
            if len(seq) > room:
                seq = seq[:room]
                seq[-1] = eot
            seqs.append(seq)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        dim = model_embed_dim(self.model)
        out = torch.empty((len(seqs), dim), dtype=torch.float32, device=device)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            longest = len(seqs[idx[-1]])
            tokens = torch.zeros((len(idx), longest), dtype=torch.long, device=device)
            ends = torch.empty(len(idx), dtype=torch.long, device=device)
            for row, i in enumerate(idx):
                tokens[row, : len(seqs[i])] = torch.tensor(seqs[i])
                ends[row] = len(seqs[i]) - 1
            h = self._embed(tokens, p)
            for block, kv in zip(blocks, past, strict=True):
                h, _ = self._block(block, h, kv)
            pooled = h[torch.arange(len(idx), device=device), ends]
            out[torch.tensor(idx, device=device)] = self._project(pooled)
        return out
