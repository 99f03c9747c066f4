"""Read and write AUTOMATIC1111 "infotext" (the `parameters` text A1111 stores in images).

The layout A1111 writes::

    prompt line(s)
    Negative prompt: negative line(s)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Lora hashes: "a: 1, b: 2"

The last line holds `Key: value` pairs joined by ", "; a value containing ",", ":" or a
newline is written as a JSON string, and a pair whose value equals its key is written as
the bare key. The last line counts as parameters only when it holds at least three pairs;
otherwise it is part of the prompt.

`format_infotext(parse_infotext(text)) == text` for any text A1111 writes: prompt lines
are kept verbatim (A1111's own reader strips each line), and a value that merely looks
quoted (`"hello"`, which A1111 writes as is because it needs no quoting) keeps its quotes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from curator.errors import CuratorError

NEGATIVE_PREFIX = "Negative prompt:"
MIN_PARAM_PAIRS = 3

# A key as A1111's reader accepts it (a word character, then words, spaces, "-" or "/"),
# then ":" and the one space A1111 writes; further spaces belong to the value.
_PAIR_HEAD = re.compile(r"(\w[\w \-/]*): ?")
_JSON_STRING = re.compile(r'"(?:\\.|[^\\"])*"')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


class InfotextError(CuratorError):
    """Generation metadata could not be read."""


def _get(params: dict[str, str], key: str) -> str | None:
    """Value for `key`, falling back to a case-insensitive match (other UIs vary the case)."""
    if key in params:
        return params[key]
    lowered = key.lower()
    for name, value in params.items():
        if name.lower() == lowered:
            return value
    return None


def _to_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _to_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _to_str(value: str | None) -> str | None:
    return value if value else None


def _size(value: str | None) -> tuple[int, int] | None:
    match = _SIZE.match(value.strip()) if value is not None else None
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class Infotext:
    """Prompt, negative prompt and the ordered parameters, values as unquoted strings.

    Typed accessors return None when a parameter is absent or malformed; the raw string
    stays in `params`. A missing `Clip skip` reads as None (A1111 omits it when it is 1).
    """

    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> int | None:
        return _to_int(_get(self.params, "Steps"))

    @property
    def sampler(self) -> str | None:
        return _to_str(_get(self.params, "Sampler"))

    @property
    def cfg_scale(self) -> float | None:
        return _to_float(_get(self.params, "CFG scale"))

    @property
    def seed(self) -> int | None:
        return _to_int(_get(self.params, "Seed"))

    @property
    def width(self) -> int | None:
        size = _size(_get(self.params, "Size"))
        return size[0] if size else None

    @property
    def height(self) -> int | None:
        size = _size(_get(self.params, "Size"))
        return size[1] if size else None

    @property
    def model_hash(self) -> str | None:
        return _to_str(_get(self.params, "Model hash"))

    @property
    def model(self) -> str | None:
        return _to_str(_get(self.params, "Model"))

    @property
    def denoising_strength(self) -> float | None:
        return _to_float(_get(self.params, "Denoising strength"))

    @property
    def clip_skip(self) -> int | None:
        return _to_int(_get(self.params, "Clip skip"))


def _needs_quote(value: str) -> bool:
    return "," in value or ":" in value or "\n" in value


def _quote(value: str) -> str:
    """A1111's `quote()`: JSON only when the value would otherwise break the line."""
    return json.dumps(value, ensure_ascii=False) if _needs_quote(value) else value


def _unquote(raw: str) -> str:
    """Undo `_quote`; a quoted-looking value that never needed quoting keeps its quotes."""
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        return raw
    try:
        decoded = json.loads(raw)
    except ValueError:
        return raw
    return decoded if isinstance(decoded, str) and _needs_quote(decoded) else raw


def _split_params(line: str) -> list[tuple[str, str | None]]:
    """Split a parameter line into (key, raw value) pairs and (bare text, None) entries.

    Entries are separated by "," plus one optional space; a value starting with a quote
    runs to the end of its JSON string, so commas inside it do not split.
    """
    entries: list[tuple[str, str | None]] = []
    pos, end = 0, len(line)
    while pos < end:
        head = _PAIR_HEAD.match(line, pos)
        if head is not None:
            start = head.end()
            quoted = _JSON_STRING.match(line, start) if line.startswith('"', start) else None
            if quoted is not None and (quoted.end() == end or line[quoted.end()] == ","):
                stop = quoted.end()
            else:
                stop = line.find(",", start)
                stop = end if stop < 0 else stop
            entries.append((head.group(1), line[start:stop]))
        else:
            stop = line.find(",", pos)
            stop = end if stop < 0 else stop
            if stop > pos:
                entries.append((line[pos:stop], None))
        pos = stop + 1
        if line.startswith(" ", pos):
            pos += 1
    return entries


def parse_infotext(text: str) -> Infotext:
    """Parse infotext as A1111 writes it; any text parses (at worst, all of it is prompt)."""
    lines = text.replace("\r\n", "\n").strip().split("\n")
    params: dict[str, str] = {}
    entries = _split_params(lines[-1])
    if sum(1 for _, raw in entries if raw is not None) >= MIN_PARAM_PAIRS:
        lines.pop()
        for key, raw in entries:
            params[key] = key if raw is None else _unquote(raw)

    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if negative is None and line.lstrip().startswith(NEGATIVE_PREFIX):
            rest = line.lstrip()[len(NEGATIVE_PREFIX) :]
            negative = [rest[1:] if rest.startswith(" ") else rest]
        elif negative is None:
            prompt.append(line)
        else:
            negative.append(line)
    return Infotext(
        prompt="\n".join(prompt),
        negative_prompt="\n".join(negative) if negative is not None else "",
        params=params,
    )


def is_a1111_infotext(text: str) -> bool:
    """Whether ``text`` has the shape A1111 writes: a last line of parameters with Steps.

    A1111's `create_infotext` always writes ``Steps`` first among at least a sampler,
    CFG scale, seed and size; a bare comment such as ``Screenshot`` has no such line.
    """
    info = parse_infotext(text)
    return _get(info.params, "Steps") is not None


def format_infotext(info: Infotext) -> str:
    """Write infotext exactly as A1111's `create_infotext` does."""
    texts = ((key, str(value)) for key, value in info.params.items())
    pairs = ", ".join(key if key == value else f"{key}: {_quote(value)}" for key, value in texts)
    negative = f"\n{NEGATIVE_PREFIX} {info.negative_prompt}" if info.negative_prompt else ""
    return f"{info.prompt}{negative}\n{pairs}".strip()


def _param_text(value: Any) -> str:
    """Parameter values are strings; JSON spells anything else (28, 5.0, true, [..])."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# NovelAI "Comment" keys that have an A1111 counterpart.
_NOVELAI_KEYS = {"steps": "Steps", "sampler": "Sampler", "scale": "CFG scale", "seed": "Seed"}


def parse_novelai_comment(comment_json: str, description: str | None = None) -> Infotext:
    """Map NovelAI's PNG `Comment` JSON (and `Description` text) onto an `Infotext`.

    The prompt is the comment's `prompt`, else the description (older NovelAI images keep
    it only there); `uc` is the negative prompt; steps, sampler, scale, seed and
    width/height become A1111's `Steps`, `Sampler`, `CFG scale`, `Seed` and `Size`. Every
    other key is kept in `params` under its own name, non-strings spelled as JSON.
    """
    try:
        data = json.loads(comment_json)
    except ValueError as error:
        raise InfotextError(f"NovelAI comment is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise InfotextError("NovelAI comment is not a JSON object")

    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        prompt = description or ""
    negative = data.get("uc")
    params: dict[str, str] = {}
    width, height = data.get("width"), data.get("height")
    for key, value in data.items():
        if key in ("prompt", "uc", "width", "height") or value is None:
            continue
        params[_NOVELAI_KEYS.get(key, key)] = _param_text(value)
    if isinstance(width, int) and isinstance(height, int):
        params["Size"] = f"{width}x{height}"
    else:
        for key, value in (("width", width), ("height", height)):
            if value is not None:
                params[key] = _param_text(value)
    return Infotext(
        prompt=prompt,
        negative_prompt=negative if isinstance(negative, str) else "",
        params=params,
    )


def generation_fields(info: Infotext) -> dict[str, Any]:
    """The typed columns the catalog stores, plus `extra`: every other parameter.

    A parameter whose value does not parse (say `Steps: twenty`) reads as None and keeps
    its raw string in `extra`, so nothing the image carried is lost.
    """
    size = _size(_get(info.params, "Size"))
    fields: dict[str, Any] = {
        "prompt": info.prompt,
        "negative_prompt": info.negative_prompt,
        "steps": info.steps,
        "sampler": info.sampler,
        "cfg_scale": info.cfg_scale,
        "seed": info.seed,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "model_hash": info.model_hash,
        "model": info.model,
        "denoising_strength": info.denoising_strength,
        "clip_skip": info.clip_skip,
    }
    typed = {
        "steps": "Steps",
        "sampler": "Sampler",
        "cfg_scale": "CFG scale",
        "seed": "Seed",
        "width": "Size",
        "model_hash": "Model hash",
        "model": "Model",
        "denoising_strength": "Denoising strength",
        "clip_skip": "Clip skip",
    }
    consumed = {key.lower() for column, key in typed.items() if fields[column] is not None}
    fields["extra"] = {k: v for k, v in info.params.items() if k.lower() not in consumed}
    return fields
