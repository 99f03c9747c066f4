"""A1111 extra networks in prompts: `<lora:NAME:MULT>` (and its hashes for infotext).

As in A1111, every `<kind:args>` tag is taken out of the prompt before it is encoded
(`<(\\w+):([^>]+)>`, arguments split on ":"); the infotext keeps the prompt as written
and adds `Lora hashes: "NAME: HASH, ..."` with the 12-digit hash A1111 shows: the sha256
of a `.safetensors` file's tensor data after its header (kohya's hash), or of the whole
file otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import CuratorError

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")


class ExtraNetworkError(CuratorError):
    """An extra network named in a prompt that cannot be used."""


@dataclass(frozen=True)
class LoraUse:
    name: str
    text_encoder: float
    unet: float
    path: Path
    short_hash: str


def split_extra_networks(prompt: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """(prompt without tags, [(kind, arguments)]) as A1111's `parse_prompt`."""
    found: list[tuple[str, list[str]]] = []

    def take(match: re.Match) -> str:
        found.append((match.group(1), match.group(2).split(":")))
        return ""

    return EXTRA_NETWORK.sub(take, prompt), found


def lora_hash(path: Path) -> str:
    """A1111's LoRA short hash (12 hex digits); a trainer's `sshs_model_hash` wins."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if path.suffix.lower() == ".safetensors":
            header = int.from_bytes(handle.read(8), "little")
            try:
                meta = json.loads(handle.read(header)).get("__metadata__") or {}
            except ValueError:
                meta = {}
            if isinstance(meta.get("sshs_model_hash"), str) and meta["sshs_model_hash"]:
                return meta["sshs_model_hash"][:12]
            handle.seek(8 + header)
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:12]


def _find(name: str, folders: list[str]) -> Path | None:
    for folder in folders:
        for suffix in LORA_SUFFIXES:
            candidate = Path(folder).expanduser() / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        matches = sorted(Path(folder).expanduser().rglob(f"{name}.safetensors"))
        if matches:
            return matches[0]
    return None


def resolve_loras(
    networks: list[tuple[str, list[str]]], lora_dirs: list[str], allow_pickle: bool = False
) -> list[LoraUse]:
    """The LoRAs a prompt names, found in `lora_dirs`; anything else is one error."""
    uses, problems = [], []
    for kind, args in networks:
        if kind == "hypernet":  # curator.generation.hypernetworks takes these
            continue
        if kind != "lora":
            problems.append(f"<{kind}:...> networks are not supported")
            continue
        name = args[0]
        try:
            te = float(args[1]) if len(args) > 1 else 1.0
            unet = float(args[2]) if len(args) > 2 else te
        except ValueError:
            problems.append(f"<lora:{':'.join(args)}> has a multiplier that is not a number")
            continue
        path = _find(name, lora_dirs)
        if path is None:
            problems.append(
                f"LoRA {name!r} not found in {', '.join(lora_dirs) or '(no --lora-dir)'}"
            )
            continue
        if path.suffix.lower() != ".safetensors" and not allow_pickle:
            problems.append(f"LoRA {path.name} is pickled; pass --allow-pickle if you trust it")
            continue
        uses.append(LoraUse(name, te, unet, path, lora_hash(path)))
    if problems:
        raise ExtraNetworkError("; ".join(problems))
    return uses


def activate_loras(pipe: Any, uses: list[LoraUse]) -> None:
    """Load `uses` into the pipeline (replacing any LoRA loaded before)."""
    deactivate_loras(pipe)
    if not uses:
        return
    names = []
    for index, use in enumerate(uses):
        adapter = f"lora{index}"
        try:
            pipe.load_lora_weights(str(use.path), adapter_name=adapter)
        except (ValueError, KeyError, OSError, RuntimeError) as error:
            raise ExtraNetworkError(f"cannot load LoRA {use.path.name}: {error}") from error
        names.append(adapter)
    encoders = ["text_encoder"] + (["text_encoder_2"] if hasattr(pipe, "text_encoder_2") else [])
    weights = [
        u.unet
        if u.unet == u.text_encoder
        else {"unet": u.unet, **dict.fromkeys(encoders, u.text_encoder)}
        for u in uses
    ]
    pipe.set_adapters(names, adapter_weights=weights)


def deactivate_loras(pipe: Any) -> None:
    """Remove the LoRAs `activate_loras` loaded (adapters `lora0`, `lora1`, ...); adapters
    added otherwise (a LoRA being trained, sampled mid-training) stay, and active."""
    if not (getattr(pipe, "get_active_adapters", None) and _has_adapters(pipe)):
        return
    listed = {name for names in pipe.get_list_adapters().values() for name in names}
    ours = sorted(name for name in listed if re.fullmatch(r"lora\d+", name))
    others = sorted(listed - set(ours))
    if not others:
        pipe.unload_lora_weights()
    elif ours:
        pipe.delete_adapters(ours)
        pipe.set_adapters(others)


def _has_adapters(pipe: Any) -> bool:
    try:
        return bool(pipe.get_list_adapters())
    except (ValueError, AttributeError):
        return False


def lora_infotext(uses: list[LoraUse]) -> str | None:
    if not uses:
        return None
    return ", ".join(f"{u.name.replace(':', '').replace(',', '')}: {u.short_hash}" for u in uses)
