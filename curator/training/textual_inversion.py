"""Textual inversion: new token vectors learned for a trigger word, everything else frozen.

Saved as A1111 loads it: `NAME.safetensors` holding one tensor, `emb_params`, shaped
[vectors, text-encoder width], or for SDXL one per text encoder, `clip_l` [vectors, 768]
and `clip_g` [vectors, 1280] (A1111's `create_embedding_from_data` takes a dict holding
both as an SDXL embedding; it has no `.pt` dict form for SDXL, so `--format pt` is
refused there); A1111 (and Curator's `--embeddings-dir`) knows the
embedding by its file name, so the file is named after the trigger word. On request
the file is A1111's own `NAME.pt` dict instead (`string_to_token`, `string_to_param`,
`name`, `step`, `sd_checkpoint`, `sd_checkpoint_name`), written so that A1111's
restricted unpickler accepts it.

During training the trigger word is spelled with placeholder tokens added to a copy
of the tokenizer (one per vector), so any word can be the trigger, even one the
vocabulary has: like A1111, the embedding replaces the word's tokens wherever the word
appears. A caption that does not mention the word gets it in front.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.generation.loading import is_local_sdxl
from curator.training import sdxl
from curator.training.loop import (
    Method,
    TrainOptions,
    TrainResult,
    base_model_hashes,
    load_base,
    prepare_data,
    run_loop,
    token_ids,
    train_recorded,
)

TOKEN = re.compile(r"^[\w\-]+$")


@dataclass
class TextualInversionOptions(TrainOptions):
    token: str = ""  # the trigger word, and the file name
    init_text: str = "*"  # A1111's default initialization text
    vectors: int = 1
    lr: float = 5e-3  # A1111's default embedding learning rate
    file_format: str = "safetensors"  # or "pt": A1111's own pickled dict


PT_ENTRY = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")


def save_a1111_pt(path: Path, vectors: Any, fields: dict[str, Any]) -> None:
    """A1111's `.pt` embedding: its dict, in a zip A1111's restricted loader accepts."""
    data = {
        "string_to_token": {"*": 265},  # A1111 writes this fixed placeholder
        "string_to_param": {"*": vectors.detach().float().cpu().contiguous()},
        **fields,
    }
    write_restricted_pt(path, data)


def write_restricted_pt(path: Path, data: Any) -> None:
    """`torch.save(data)` as a zip that A1111's restricted loader accepts.

    That loader admits only the entries `data.pkl`, `version` and `data/N`; recent torch
    also writes `byteorder`, `.format_version`, `.storage_alignment` and
    `.data/serialization_id`, which torch does not need to read the file back (a
    missing byte-order record means little-endian, what every supported machine uses),
    so they are left out.
    """
    import io
    import sys
    import zipfile

    import torch

    if sys.byteorder != "little":
        raise UsageError("A1111's .pt format needs a little-endian machine")
    buffer = io.BytesIO()
    torch.save(data, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".part")
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(temporary, "w") as target:
        for info in source.infolist():
            if PT_ENTRY.match(info.filename):
                target.writestr(info.filename, source.read(info), zipfile.ZIP_STORED)
    temporary.replace(path)


def check_token(options: TextualInversionOptions) -> None:
    if not options.token or not TOKEN.match(options.token):
        raise UsageError(
            "--token must be one word of letters, digits, '_' or '-' (it is the file name "
            "and the word prompts use)"
        )
    if options.name and options.name != options.token:
        raise UsageError(
            "an embedding's file name is its trigger word: name it with --token, not --name"
        )
    if options.file_format not in ("safetensors", "pt"):
        raise UsageError("--format must be safetensors or pt")
    if not 1 <= options.vectors <= 75:
        raise UsageError("--vectors must be between 1 and 75")


def initial_vectors(pipe: Any, init_text: str, count: int, tokenizer=None, encoder=None):
    """A1111's `create_embedding`: vector i is the init text's token embedding at
    i * tokens // count (zeros when the init text is empty); `tokenizer` and `encoder`
    pick SDXL's second encoder (default: the first)."""
    import torch

    tokenizer = tokenizer or pipe.tokenizer
    table = (encoder or pipe.text_encoder).get_input_embeddings().weight
    ids = tokenizer(init_text, add_special_tokens=False).input_ids if init_text else []
    vectors = torch.zeros(count, table.shape[1], dtype=table.dtype, device=table.device)
    if ids:
        embedded = table[torch.tensor(ids, device=table.device)].detach()
        for i in range(count):
            vectors[i] = embedded[i * len(ids) // count]
    return vectors


def placeholder_words(token: str, count: int) -> list[str]:
    return [f"<{token}-{i}>" for i in range(count)]


def prompt_with_token(caption: str, token: str, spelled: str) -> str:
    pattern = re.compile(rf"(?<![\w-]){re.escape(token)}(?![\w-])")
    if pattern.search(caption):
        return pattern.sub(spelled, caption)
    return f"{spelled}, {caption}" if caption else spelled


def save_embedding(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".part")
    plain = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    save_file(plain, str(temporary), metadata)
    temporary.replace(path)


def refuse_sdxl_pt() -> None:
    raise UsageError(
        "A1111 reads SDXL embeddings only as clip_l/clip_g tensors: use --format safetensors"
    )


def train_textual_inversion(options: TextualInversionOptions, catalog: Any = None) -> TrainResult:
    """Learn `options.vectors` vectors for `options.token` from `options.data`."""
    check_token(options)
    if options.file_format == "pt" and is_local_sdxl(options.base):
        refuse_sdxl_pt()
    # class images would teach the word the class
    dataset = prepare_data(options, reg=False, catalog=catalog)
    name = options.token
    extra = {"token": options.token, "init_text": options.init_text, "vectors": options.vectors}
    return train_recorded(
        catalog,
        "textual-inversion",
        options,
        dataset,
        extra,
        lambda: _train(options, dataset, name),
    )


@dataclass
class _Part:
    """One text encoder's share of the embedding: its tokenizer copy with the
    placeholder words, its token table and the rows that learn."""

    key: str  # the tensor's name in the saved file
    tokenizer: Any
    table: Any
    ids: list[int]
    frozen: Any
    keep: Any  # rows that stay as they were


def _add_words(
    pipe: Any, key: str, tokenizer: Any, encoder: Any, options: TextualInversionOptions
) -> _Part:
    import copy

    import torch

    # the pipeline's own tokenizer stays as it was: the placeholders live in a copy
    grown = copy.deepcopy(tokenizer)
    words = placeholder_words(options.token, options.vectors)
    grown.add_tokens(words)
    ids = grown.convert_tokens_to_ids(words)
    initial = initial_vectors(pipe, options.init_text, options.vectors, tokenizer, encoder)
    encoder.resize_token_embeddings(len(grown), mean_resizing=False)  # rows set below
    table = encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[ids] = initial
    table.requires_grad_(True)
    keep = torch.ones(table.shape[0], dtype=torch.bool, device=table.device)
    keep[ids] = False
    return _Part(key, grown, table, ids, table.detach().clone(), keep)


def _train(options: TextualInversionOptions, dataset: Any, name: str) -> TrainResult:
    import torch

    model = load_base(options)
    pipe = model.pipeline
    xl = sdxl.is_sdxl(pipe)
    if xl and options.file_format == "pt":
        refuse_sdxl_pt()
    encoders = [(pipe.tokenizer, pipe.text_encoder, "clip_l" if xl else "emb_params")]
    if xl:
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2, "clip_g"))
    for part in (pipe.unet, pipe.vae, *(encoder for _, encoder, _ in encoders)):
        part.requires_grad_(False)
    parts = [_add_words(pipe, key, t, e, options) for t, e, key in encoders]
    spelled = " ".join(placeholder_words(options.token, options.vectors))
    device = str(pipe.device)

    def encode(captions: list[str]):
        prompts = [prompt_with_token(c, options.token, spelled) for c in captions]
        # looked up on the pipeline: with several processes the DDP wrapper stands there
        if xl:
            tokenizers = (parts[0].tokenizer, parts[1].tokenizer)
            return sdxl.encode(pipe, prompts, device, grad=True, tokenizers=tokenizers)
        return pipe.text_encoder(token_ids(parts[0].tokenizer, prompts, device))[0]

    def after_step() -> None:
        with torch.no_grad():  # only the new rows learn
            for part in parts:
                part.table[part.keep] = part.frozen[part.keep]

    is_file = Path(options.base).expanduser().is_file()
    checkpoint_hash = base_model_hashes(options.base)[1][:10] if is_file else None  # AutoV2

    def save(path: Path, step: int) -> None:
        if options.file_format == "pt":
            fields = {
                "name": options.token,
                "step": step,
                "sd_checkpoint": checkpoint_hash,
                "sd_checkpoint_name": Path(options.base).stem,
            }
            save_a1111_pt(path, parts[0].table[parts[0].ids], fields)
            return
        metadata = {
            "name": options.token,
            "step": str(step),
            "sd_checkpoint_name": Path(options.base).stem,
            "init_text": options.init_text,
        }
        save_embedding(path, {part.key: part.table[part.ids] for part in parts}, metadata)

    tables = [part.table for part in parts]
    method = Method("textual-inversion", tables, encode, save, after_step, weight_decay=0.0)
    return run_loop(pipe, dataset, options, method, name, suffix=f".{options.file_format}")
