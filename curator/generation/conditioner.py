"""Per-step text conditioning for the pipelines: schedules padded to one length, batched.

Each schedule entry is (embeddings, pooled): pooled is None for SD 1.x/2.x and SDXL's
pooled OpenCLIP-G vector otherwise. `step_callback` is the diffusers
`callback_on_step_end` that reports progress, honours cancellation and switches the
conditioning at the steps prompt editing names.
"""

from __future__ import annotations

from typing import Any

from curator.generation import sdxl
from curator.generation.conditioning import (
    ScheduledConditioning,
    encode_texts,
    pad_to_tokens,
    scheduled_conditioning,
)
from curator.generation.embeddings import load_embeddings
from curator.generation.extra_networks import split_extra_networks
from curator.progress import Reporter


class Conditioner:
    """Positive and negative schedules padded to one token length, batched per step."""

    def __init__(self, model: Any, params: Any, steps: int):
        pipe = model.pipeline
        prompt, _ = split_extra_networks(params.prompt)
        self.used: dict[str, str] = {}
        self.xl = sdxl.is_sdxl(pipe)
        if self.xl:
            dbs = None
            if params.embeddings_dirs:
                dbs = sdxl.load_sdxl_embeddings(pipe, params.embeddings_dirs, params.allow_pickle)
            self.positive = sdxl.scheduled_sdxl(
                pipe, prompt, steps, params.clip_skip, self.used, embeddings=dbs
            )
            self.negative = sdxl.scheduled_sdxl(
                pipe,
                params.negative_prompt,
                steps,
                params.clip_skip,
                self.used,
                negative=True,
                embeddings=dbs,
            )
            empty = sdxl.encode_sdxl(pipe, [""], params.clip_skip)[0]
        else:
            self.positive, self.negative, empty = self._sd(pipe, prompt, params, steps)
        length = max(e[0].shape[1] for s in (self.positive, self.negative) for _, e in s.entries)
        for schedule in (self.positive, self.negative):
            schedule.entries = [
                (end, (pad_to_tokens(embeds, length, empty), pooled))
                for end, (embeds, pooled) in schedule.entries
            ]
        self.batch = params.batch_size
        self.size = sdxl.time_ids(params.width, params.height) if self.xl else {}

    def _sd(self, pipe: Any, prompt: str, params: Any, steps: int):
        encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
        db = None
        if params.embeddings_dirs:
            width = encoder.get_input_embeddings().weight.shape[1]
            db = load_embeddings(params.embeddings_dirs, tokenizer, width, params.allow_pickle)
        schedules = []
        for text in (prompt, params.negative_prompt):
            plain = scheduled_conditioning(
                encoder, tokenizer, text, steps, params.clip_skip, db, self.used
            )
            schedules.append(ScheduledConditioning([(e, (c, None)) for e, c in plain.entries]))
        return schedules[0], schedules[1], encode_texts(encoder, tokenizer, [""], params.clip_skip)

    def at(self, step: int):
        """((embeddings, pooled) positive, (embeddings, pooled) negative), batched."""
        return tuple(
            (
                embeds.repeat(self.batch, 1, 1),
                None if pooled is None else pooled.repeat(self.batch, 1),
            )
            for embeds, pooled in (self.positive.at(step), self.negative.at(step))
        )

    def pipeline_kwargs(self, step: int = 0, size: dict | None = None) -> dict[str, Any]:
        """The pipeline's conditioning arguments for `step`; `size` overrides SDXL's
        size conditioning (the hires pass conditions on its own size)."""
        (positive, pooled), (negative, negative_pooled) = self.at(step)
        kwargs: dict[str, Any] = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        if self.xl:
            kwargs["pooled_prompt_embeds"] = pooled
            kwargs["negative_pooled_prompt_embeds"] = negative_pooled
            kwargs.update(size or self.size)
        return kwargs

    @property
    def tensor_inputs(self) -> list[str]:
        return ["prompt_embeds", "add_text_embeds"] if self.xl else ["prompt_embeds"]

    def switches(self) -> set[int]:
        return set(self.positive.switch_steps) | set(self.negative.switch_steps)


def step_callback(conditioner: Conditioner, guided: bool, reporter: Reporter, cancel):
    switches = conditioner.switches()

    def on_step_end(pipe, index, timestep, kwargs):
        reporter.advance(1)
        if cancel is not None and cancel.cancelled:
            pipe._interrupt = True
        # Step `index` (counted from 0, as A1111's denoiser counts) used the conditioning for
        # `index`; the next step uses the one for `index + 1`.
        if index in switches:
            (positive, pooled), (negative, negative_pooled) = conditioner.at(index + 1)
            kwargs["prompt_embeds"] = positive if not guided else _cat(negative, positive)
            if conditioner.xl:
                kwargs["add_text_embeds"] = pooled if not guided else _cat(negative_pooled, pooled)
        return kwargs

    return on_step_end


def _cat(negative, positive):
    import torch

    return torch.cat([negative, positive])
