"""Token chunks as A1111 builds them: 75 tokens a chunk, BREAK, comma back-off, weights.

`clip_tokenizer()` builds the CLIP BPE tokenizer SD 1.x uses, offline, from the
vocabulary open_clip ships, for `curator prompt` when no checkpoint is given.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.generation.prompt_attention import BREAK_WEIGHT, parse_prompt_attention

CHUNK_LENGTH = 75
# A1111's default `comma_padding_backtrack`: text after a comma this close to a chunk's end
# moves to the next chunk.
COMMA_BACKTRACK = 20


@dataclass
class Chunk:
    """One 77-token window: start token, 75 prompt tokens (padded), end token.

    `fixes` are (offset among the 75, embedding) pairs: the embedding's vectors replace
    the token embeddings from that offset on.
    """

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Any]] = field(default_factory=list)


@dataclass
class TokenizedPrompt:
    chunks: list[Chunk]
    token_count: int


def clip_tokenizer(model_max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """A `CLIPTokenizer` with the SD 1.x vocabulary, built from open_clip's BPE file.

    SDXL's second tokenizer is the same vocabulary padding with "!" (token 0).

    The vocabulary order matches OpenAI's CLIP (bytes, bytes + "</w>", merges, then the
    start and end tokens), so token ids equal those of the hub tokenizer.
    """
    import open_clip
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            model_max_length=model_max_length,
            pad_token=pad_token,
        )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def tokenize_prompt(
    tokenizer: Any, prompt: str, backtrack: int = COMMA_BACKTRACK, embeddings: Any = None
) -> TokenizedPrompt:
    """Split `prompt` into weighted 77-token chunks exactly as A1111's `tokenize_line`."""
    parsed = parse_prompt_attention(prompt)
    texts = [text for text, _ in parsed]
    ids = tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    # one lookup; `get_vocab()` copies the whole 49k-entry vocabulary
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    if comma == tokenizer.unk_token_id:
        comma = None

    chunks: list[Chunk] = []
    current = Chunk()
    count = 0
    last_comma = -1

    def close(is_last: bool = False) -> None:
        nonlocal current, count, last_comma
        count += len(current.tokens) if is_last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(current.tokens)
        if pad > 0:
            current.tokens += [end] * pad
            current.weights += [1.0] * pad
        current.tokens = [start, *current.tokens, end]
        current.weights = [1.0, *current.weights, 1.0]
        chunks.append(current)
        current = Chunk()
        last_comma = -1

    for tokens, (text, weight) in zip(ids, parsed, strict=True):
        if text == "BREAK" and weight == BREAK_WEIGHT:
            close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                last_comma = len(current.tokens)
            elif (
                backtrack
                and len(current.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(current.tokens) - last_comma <= backtrack
            ):
                cut = last_comma + 1
                moved = current.tokens[cut:], current.weights[cut:]
                current.tokens, current.weights = current.tokens[:cut], current.weights[:cut]
                close()
                current.tokens, current.weights = list(moved[0]), list(moved[1])
            if len(current.tokens) == CHUNK_LENGTH:
                close()
            found = embeddings.at(tokens, position) if embeddings else None
            if found is None:
                current.tokens.append(token)
                current.weights.append(weight)
                position += 1
                continue
            embedding, name_length = found
            count = int(embedding.vectors.shape[0])
            if len(current.tokens) + count > CHUNK_LENGTH:
                close()
            current.fixes.append((len(current.tokens), embedding))
            current.tokens += [0] * count
            current.weights += [weight] * count
            position += name_length
    if current.tokens or not chunks:
        close(is_last=True)
    return TokenizedPrompt(chunks, count)
