"""The CLIP interrogator: clip-interrogator's method and its four modes.

Given the same open_clip model, banks and caption, each mode returns what
clip-interrogator 0.6.0 returns; the ranking rules below (float16 bank embeddings,
ranking in chunks, the greedy chain and its stopping rules) are its own, kept
because its results are defined by them. Where results could differ is only
where two candidates' similarities tie to float rounding.

`best` and `negative` encode thousands of "prompt so far, candidate" texts per step;
with a causal text tower this goes through `PrefixEncoder` (the prefix once, then
only the candidates' own tokens), else through whole-text encoding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from taggers.clip.banks import CLASSIC, MERGED, EmbeddingCache
from taggers.clip.loading import ClipBundle
from taggers.clip.textenc import PrefixEncoder, encode_texts
from taggers.errors import TaggerError

MODES = ("fast", "classic", "best", "negative")


@dataclass
class InterrogatorSettings:
    chunk_size: int = 2048  # ranking chunk, as clip-interrogator's Config.chunk_size
    flavor_intermediate_count: int = 2048  # candidates kept for the chains
    min_flavors: int = 8
    max_flavors: int = 32
    classic_flavors: int = 3
    prefix_kv: bool = True  # False: encode every chain candidate whole
    text_batch: int = 256


@dataclass
class _Table:
    labels: list[str]
    embeds: torch.Tensor  # float32 copy of the float16 cached embeddings


@dataclass
class Interrogator:
    clip: ClipBundle
    banks: Mapping[str, list[str]]
    cache: EmbeddingCache = field(default_factory=lambda: EmbeddingCache(None))
    settings: InterrogatorSettings = field(default_factory=InterrogatorSettings)
    _tables: dict[str, _Table] = field(default_factory=dict, repr=False)
    _merged: _Table | None = field(default=None, repr=False)

    # -- encoding ------------------------------------------------------------------------

    @property
    def _model_key(self) -> str:
        return f"{self.clip.name}@{self.clip.revision}"

    def table(self, name: str) -> _Table:
        if name not in self._tables:
            if name not in self.banks:
                raise TaggerError(f"no bank named {name!r}; banks: {', '.join(self.banks)}")
            labels = list(self.banks[name])
            embeds = self.cache.get(self._model_key, labels, self._encode_bank)
            device = self.clip.torch_device
            self._tables[name] = _Table(labels, torch.from_numpy(embeds).to(device).float())
        return self._tables[name]

    def merged(self) -> _Table:
        if self._merged is None:
            names = [n for n in MERGED if n in self.banks]
            names += [n for n in self.banks if n not in MERGED and n != "negative"]
            tables = [self.table(n) for n in names]
            self._merged = _Table(
                [label for t in tables for label in t.labels],
                torch.cat([t.embeds for t in tables]),
            )
        return self._merged

    def _encode_bank(self, terms: list[str]) -> np.ndarray:
        model, tokenizer = self.clip.model, self.clip.tokenizer
        return encode_texts(model, tokenizer, terms, self.settings.text_batch).half().cpu().numpy()

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float32 features of a batch of transformed images."""
        model = self.clip.model
        dtype = next(model.parameters()).dtype
        features = model.encode_image(pixels.to(self.clip.torch_device, dtype)).float()
        return features / features.norm(dim=-1, keepdim=True)

    def similarities(self, features: torch.Tensor, texts: Sequence[str]) -> list[float]:
        text = encode_texts(self.clip.model, self.clip.tokenizer, texts, self.settings.text_batch)
        return (text @ features.reshape(-1, 1)).squeeze(1).tolist()

    def similarity(self, features: torch.Tensor, text: str) -> float:
        return self.similarities(features, [text])[0]

    # -- ranking -------------------------------------------------------------------------

    def rank(
        self, features: torch.Tensor, table: _Table, top: int, reverse: bool = False
    ) -> list[str]:
        """The `top` labels, chunked as clip-interrogator's LabelTable.rank ranks."""
        sims = table.embeds @ features.reshape(-1)
        chunk = self.settings.chunk_size
        if len(table.labels) <= chunk:
            return [table.labels[i] for i in _topk(sims, top, reverse)]
        chunks = int(math.ceil(len(table.labels) / chunk))
        keep = int(chunk / chunks)
        kept: list[int] = []
        for c in range(chunks):
            start = c * chunk
            part = sims[start : min(start + chunk, len(table.labels))]
            kept += [start + i for i in _topk(part, keep, reverse)]
        # The last pass ranks most similar first even for reverse: as the reference does.
        final = _topk(sims[torch.tensor(kept, device=sims.device)], top, False)
        return [table.labels[kept[i]] for i in final]

    # -- modes ---------------------------------------------------------------------------

    def fast(self, features: torch.Tensor, caption: str, max_flavors: int | None = None) -> str:
        tops = self.rank(features, self.merged(), max_flavors or self.settings.max_flavors)
        return self.truncate(", ".join([caption, *tops]) if caption else ", ".join(tops))

    def classic(self, features: torch.Tensor, caption: str, max_flavors: int | None = None) -> str:
        medium, artist, trending, movement = (
            self.rank(features, self.table(name), 1)[0] for name in CLASSIC[:4]
        )
        count = max_flavors or self.settings.classic_flavors
        flavors = ", ".join(self.rank(features, self.table(CLASSIC[4]), count))
        if not caption:
            prompt = f"{medium} {artist}, {trending}, {movement}, {flavors}"
        elif caption.startswith(medium):
            prompt = f"{caption} {artist}, {trending}, {movement}, {flavors}"
        else:
            prompt = f"{caption}, {medium} {artist}, {trending}, {movement}, {flavors}"
        return self.truncate(prompt)

    def best(self, features: torch.Tensor, caption: str) -> str:
        s = self.settings
        flavors = self.rank(features, self.merged(), s.flavor_intermediate_count)
        start = self.similarity(features, caption) if caption else 0.0
        chained = self.chain(features, flavors, caption, start, s.min_flavors, s.max_flavors)
        fast = self.fast(features, caption, s.max_flavors)
        classic = self.classic(features, caption, s.max_flavors)
        candidates = [c for c in (caption, classic, fast, chained) if c]
        return candidates[int(np.argmax(self.similarities(features, candidates)))]

    def negative(self, features: torch.Tensor) -> str:
        s = self.settings
        flavors = self.rank(features, self.table("flavors"), s.flavor_intermediate_count, True)
        phrases = flavors + self.table("negative").labels
        return self.chain(features, phrases, max_count=s.max_flavors, reverse=True)

    def interrogate(self, features: torch.Tensor, caption: str, mode: str = "best") -> str:
        if mode == "fast":
            return self.fast(features, caption)
        if mode == "classic":
            return self.classic(features, caption)
        if mode == "best":
            return self.best(features, caption)
        if mode == "negative":
            return self.negative(features)
        raise TaggerError(f"unknown interrogation mode {mode!r}; modes: {', '.join(MODES)}")

    # -- the chain -----------------------------------------------------------------------

    def chain(
        self,
        features: torch.Tensor,
        phrases: Sequence[str],
        best_prompt: str = "",
        best_sim: float = 0.0,
        min_count: int = 8,
        max_count: int = 32,
        reverse: bool = False,
    ) -> str:
        """Greedily append the phrase that most raises (or, reversed, lowers) similarity.

        The rules are clip-interrogator's `chain`, quirks included: below `min_count`
        a step is kept even when it lowers the score; the negative chain compares the
        negated score with its first term's positive one.
        """
        pool = list(dict.fromkeys(phrases))
        tokens: dict[str, list[int]] = {}  # each phrase's BPE tokens, once per chain
        if not best_prompt:
            index, best_sim = self._rank_continuations(features, "", pool, reverse, tokens)
            best_prompt = pool[index]
            pool.remove(best_prompt)
        curr_prompt, curr_sim = best_prompt, best_sim
        for idx in range(max_count):
            if not pool:
                break
            # The winner's similarity comes from the same pass that ranked it, instead of
            # encoding the prompt once more; the two differ only by float rounding.
            index, sim = self._rank_continuations(features, curr_prompt, pool, reverse, tokens)
            flavor = pool[index]
            prompt = f"{curr_prompt}, {flavor}"
            if reverse:
                sim = -sim
            if sim > best_sim:
                best_prompt, best_sim = prompt, sim
            if sim > curr_sim or idx < min_count:
                curr_prompt, curr_sim = prompt, sim
            else:
                break
            if self.at_max_len(curr_prompt):
                break
            pool.remove(flavor)
        return best_prompt

    def _rank_continuations(
        self,
        features: torch.Tensor,
        prefix: str,
        pool: list[str],
        reverse: bool,
        cache: dict[str, list[int]],
    ) -> tuple[int, float]:
        """(index in `pool`, similarity) of the best "prefix, phrase" (or bare phrase)."""
        texts_suffix = [f", {p}" for p in pool] if prefix else pool
        model, tokenizer = self.clip.model, self.clip.tokenizer
        use_prefix = (
            self.settings.prefix_kv
            and PrefixEncoder.supports(model, tokenizer)
            and PrefixEncoder.joins_cleanly(prefix)
        )
        if use_prefix:
            encoder = PrefixEncoder(model, tokenizer, self.settings.text_batch)
            prefix_ids = encoder.prefix_tokens(prefix) if prefix else [tokenizer.sot_token_id]
            if len(prefix_ids) < tokenizer.context_length:
                suffixes = []
                for s in texts_suffix:
                    if s not in cache:
                        cache[s] = encoder.suffix_tokens(s)
                    suffixes.append(cache[s])
                text = encoder.encode(prefix_ids, suffixes)
                return _argbest(text @ features.reshape(-1), reverse)
        texts = [f"{prefix}{s}" for s in texts_suffix]
        text = encode_texts(model, tokenizer, texts, self.settings.text_batch)
        return _argbest(text @ features.reshape(-1), reverse)

    # -- prompt length -------------------------------------------------------------------

    def at_max_len(self, text: str) -> bool:
        return bool(self.clip.tokenizer([text])[0][-1] != 0)

    def truncate(self, text: str) -> str:
        parts = text.split(", ")
        out = parts[0]
        for part in parts[1:]:
            if self.at_max_len(out + part):
                break
            out += ", " + part
        return out


def _topk(sims: torch.Tensor, k: int, reverse: bool) -> list[int]:
    values = -sims if reverse else sims
    k = min(k, values.shape[0])
    return values.float().cpu().topk(k).indices.tolist()


def _argbest(sims: torch.Tensor, reverse: bool) -> tuple[int, float]:
    index = int((-sims if reverse else sims).argmax().item())
    return index, float(sims[index].item())


def caption_or_empty(caption: Any) -> str:
    return caption if isinstance(caption, str) else ""
