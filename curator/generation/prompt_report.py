"""What `curator prompt` shows: schedule, attention runs and token chunks of a prompt."""

from __future__ import annotations

from typing import Any

from curator.generation.prompt_attention import parse_prompt_attention
from curator.generation.prompt_schedule import prompt_schedule
from curator.generation.tokenizer import tokenize_prompt


def describe_prompt(prompt: str, steps: int, tokenizer: Any) -> dict[str, Any]:
    """Per scheduled text: its (text, weight) runs and its chunks with token counts."""
    entries = []
    for end, text in prompt_schedule(prompt, steps):
        tokenized = tokenize_prompt(tokenizer, text)
        chunks = []
        for chunk in tokenized.chunks:
            body = [
                (token, weight)
                for token, weight in zip(chunk.tokens[1:-1], chunk.weights[1:-1], strict=True)
                if token != tokenizer.eos_token_id
            ]
            chunks.append(
                {
                    "tokens": len(body),
                    "text": tokenizer.decode([token for token, _ in body]),
                    "weights": sorted({round(weight, 4) for _, weight in body}),
                }
            )
        entries.append(
            {
                "until_step": end,
                "text": text,
                "attention": [[t, w] for t, w in parse_prompt_attention(text)],
                "token_count": tokenized.token_count,
                "chunks": chunks,
            }
        )
    return {"prompt": prompt, "steps": steps, "schedule": entries}
