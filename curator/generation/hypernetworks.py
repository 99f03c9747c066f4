"""Hypernetworks of the NovelAI / A1111 kind: `<hypernet:NAME:STRENGTH>` in the prompt.

A hypernetwork file (A1111's `NAME.pt`) is a dict keyed by integer context widths
(320, 640, 768, 1024, 1280, ...), each holding the state dicts of two small MLPs, one for
the attention key input and one for the value input, plus how the MLPs are built:
`layer_structure` (widths as multiples of the context width, starting and ending at 1),
`activation_func`, `is_layer_norm`, `weight_initialization`, `use_dropout`,
`dropout_structure`, `activate_output`, `last_layer_dropout`, and `name`, `step`,
`sd_checkpoint`, `sd_checkpoint_name`, `optional_info`.

Every attention of the UNet (self- and cross-attention, as A1111 patches them all) sends
its context through `context + mlp(context) * strength` before the key and value
projections, with the MLPs for the context's width; several hypernetworks apply one
after the other. The MLPs run in float32 and their result is cast back, as A1111 does.

Files are opened with torch's restricted unpickler (`weights_only=True`: tensors and
plain containers only, so no code runs); a file that needs more is refused unless
`allow_pickle` is given.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import CuratorError

SUFFIX = ".pt"  # A1111 lists hypernetworks as `**/*.pt`
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
# keys old files used before the MLP became a Sequential of any length
HYPERNET_TAG = re.compile(r"<hypernet:([^>:]+)(?::([^>]*))?>")
_OLD_KEYS = {
    "linear1.weight": "linear.0.weight",
    "linear1.bias": "linear.0.bias",
    "linear2.weight": "linear.1.weight",
    "linear2.bias": "linear.1.bias",
}


class HypernetworkError(CuratorError):
    """A hypernetwork that cannot be built, found or loaded."""


def activations() -> dict[str, type]:
    """A1111's activation names: its own few (`swish` is Hardswish, `linear` none) and
    every class of `torch.nn.modules.activation` by its lower-cased name (the latter win,
    as in A1111, where both name one)."""
    import torch

    names: dict[str, type] = {
        "linear": torch.nn.Identity,
        "relu": torch.nn.ReLU,
        "leakyrelu": torch.nn.LeakyReLU,
        "elu": torch.nn.ELU,
        "swish": torch.nn.Hardswish,
        "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid,
    }
    module = torch.nn.modules.activation
    for attribute, value in vars(module).items():
        if isinstance(value, type) and value.__module__ == module.__name__:
            names[attribute.lower()] = value
    return names


def parse_numbers(text: str, what: str) -> list[float]:
    """`"1, 2, 1"` → [1.0, 2.0, 1.0] (A1111 splits on commas and reads floats)."""
    try:
        return [float(part.strip()) for part in text.split(",")]
    except ValueError:
        raise HypernetworkError(
            f"{what} {text!r} is not a comma-separated list of numbers"
        ) from None


def default_dropout_structure(
    layer_structure: list[float], use_dropout: bool, last_layer_dropout: bool
) -> list[float]:
    """The dropout after each layer that files without `dropout_structure` imply:
    0.3 after every hidden layer but the last (that one too with `last_layer_dropout`)."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    middle = [0.3] * (len(layer_structure) - 3)
    return [0.0, *middle, 0.3 if last_layer_dropout else 0.0, 0.0]


@dataclass
class Structure:
    """How the MLPs of one hypernetwork are built."""

    layer_structure: list[float] = field(default_factory=lambda: [1.0, 2.0, 1.0])
    activation: str | None = None  # None and "linear": no activation
    layer_norm: bool = False
    activate_output: bool = False
    dropout_structure: list[float] | None = None  # None: no dropout
    weight_init: str = "Normal"

    def check(self) -> None:
        ls = self.layer_structure
        if len(ls) < 2 or ls[0] != 1 or ls[-1] != 1:
            raise HypernetworkError(
                f"layer structure {_text(ls)} must start and end with 1 (e.g. 1, 2, 1)"
            )
        if any(width <= 0 for width in ls):
            raise HypernetworkError(f"layer structure {_text(ls)} must be positive")
        if self.activation not in (None, "linear") and self.activation not in activations():
            known = ", ".join(sorted(activations()))
            raise HypernetworkError(f"unknown activation {self.activation!r}; A1111 knows: {known}")
        ds = self.dropout_structure
        if ds is not None:
            if len(ds) != len(ls):
                raise HypernetworkError(
                    f"dropout structure {_text(ds)} needs one value per layer ({len(ls)})"
                )
            if any(not (p == 0 or 0 < p < 1) for p in ds) or ds[0] != 0 or ds[-1] != 0:
                raise HypernetworkError(
                    f"dropout structure {_text(ds)}: values in [0, 1), first and last 0"
                )
        if self.weight_init not in WEIGHT_INITS:
            raise HypernetworkError(
                f"unknown weight initialization {self.weight_init!r}; one of "
                + ", ".join(WEIGHT_INITS)
            )


def _text(values: Iterable[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def build_mlp(dim: int, structure: Structure):
    """The MLP A1111 builds for context width `dim`, as a module whose state dict keys
    are A1111's (`linear.N.weight`, `linear.N.bias`)."""
    import torch

    ls, ds = structure.layer_structure, structure.dropout_structure
    layers: list[Any] = []
    last = len(ls) - 2
    for i in range(len(ls) - 1):
        layers.append(torch.nn.Linear(int(dim * ls[i]), int(dim * ls[i + 1])))
        active = structure.activation not in (None, "linear")
        if active and (i < last or structure.activate_output):
            try:
                layers.append(activations()[structure.activation]())
            except (KeyError, TypeError) as error:
                raise HypernetworkError(
                    f"activation {structure.activation!r} cannot be used: {error}"
                ) from error
        if structure.layer_norm:
            layers.append(torch.nn.LayerNorm(int(dim * ls[i + 1])))
        if ds is not None and ds[i + 1] > 0:
            layers.append(torch.nn.Dropout(p=ds[i + 1]))
    return _mlp_class()(torch.nn.Sequential(*layers))


@functools.cache
def _mlp_class() -> type:
    """The torch module class, made on first use so that importing this module needs
    no torch."""
    import torch

    class HypernetMLP(torch.nn.Module):
        """`x + mlp(x) * multiplier`; the multiplier is 1 while training, as in A1111."""

        def __init__(self, linear: Any):
            super().__init__()
            self.linear = linear
            self.multiplier = 1.0

        def forward(self, x: Any) -> Any:
            return x + self.linear(x) * (1.0 if self.training else self.multiplier)

    return HypernetMLP


def initialize(mlp: Any, structure: Structure) -> None:
    """A1111's initialization: Normal (std 0.01, zero bias) for every Linear and every
    LayerNorm whatever the choice; Xavier or Kaiming (relu gain, leaky_relu for
    `leakyrelu`) for Linear layers otherwise, with zero biases."""
    import torch
    from torch.nn import init

    gain = "leaky_relu" if structure.activation == "leakyrelu" else "relu"
    for layer in mlp.linear:
        if not isinstance(layer, torch.nn.Linear | torch.nn.LayerNorm):
            continue
        weight, bias = layer.weight.data, layer.bias.data
        if structure.weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
            init.normal_(weight, mean=0.0, std=0.01)
            init.normal_(bias, mean=0.0, std=0.0)  # zeros, drawn: the same seed, the same start
        elif structure.weight_init == "XavierUniform":
            init.xavier_uniform_(weight)
            init.zeros_(bias)
        elif structure.weight_init == "XavierNormal":
            init.xavier_normal_(weight)
            init.zeros_(bias)
        elif structure.weight_init == "KaimingUniform":
            init.kaiming_uniform_(weight, nonlinearity=gain)
            init.zeros_(bias)
        else:
            init.kaiming_normal_(weight, nonlinearity=gain)
            init.zeros_(bias)


@dataclass
class Hypernetwork:
    name: str
    structure: Structure
    layers: dict[int, tuple[Any, Any]]  # context width → (key MLP, value MLP)
    use_dropout: bool = False
    last_layer_dropout: bool = False
    step: int = 0
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    optional_info: str | None = None
    path: Path | None = None
    short_hash: str = ""  # A1111's: the first 10 hex digits of the file's sha256

    def parameters(self) -> list[Any]:
        return [p for pair in self.layers.values() for mlp in pair for p in mlp.parameters()]

    def train(self, mode: bool = True) -> None:
        for pair in self.layers.values():
            for mlp in pair:
                mlp.train(mode)
                mlp.requires_grad_(mode)

    def to(self, device: Any) -> Hypernetwork:
        for pair in self.layers.values():
            for mlp in pair:
                mlp.to(device)
        return self

    def set_multiplier(self, multiplier: float) -> None:
        for pair in self.layers.values():
            for mlp in pair:
                mlp.multiplier = multiplier

    def to_a1111(self) -> dict[Any, Any]:
        """The dict A1111's `Hypernetwork.save` writes (and its `load` reads)."""
        data: dict[Any, Any] = {}
        for size, (k, v) in self.layers.items():
            data[int(size)] = (_cpu_state(k), _cpu_state(v))
        ds = self.structure.dropout_structure or [0.0] * len(self.structure.layer_structure)
        data.update(
            {
                "step": self.step,
                "name": self.name,
                "layer_structure": list(self.structure.layer_structure),
                "activation_func": self.structure.activation,
                "is_layer_norm": self.structure.layer_norm,
                "weight_initialization": self.structure.weight_init,
                "sd_checkpoint": self.sd_checkpoint,
                "sd_checkpoint_name": self.sd_checkpoint_name,
                "activate_output": self.structure.activate_output,
                "use_dropout": self.use_dropout,
                "dropout_structure": list(ds),
                "last_layer_dropout": ds[-2] != 0 if len(ds) > 1 else self.last_layer_dropout,
                "optional_info": self.optional_info or None,
            }
        )
        return data


def _cpu_state(mlp: Any):
    from collections import OrderedDict

    return OrderedDict(
        (key, value.detach().float().cpu().contiguous().clone())
        for key, value in mlp.state_dict().items()
    )


def create_hypernetwork(
    name: str,
    sizes: Iterable[int],
    structure: Structure,
    use_dropout: bool = False,
    generator_seed: int | None = None,
) -> Hypernetwork:
    """A new hypernetwork with freshly initialized MLPs for each context width."""
    import torch

    structure.check()
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    layers = {}
    for size in sizes:  # built and initialized in A1111's order: the same seed, the same start
        key = build_mlp(size, structure)
        initialize(key, structure)
        value = build_mlp(size, structure)
        initialize(value, structure)
        layers[int(size)] = (key, value)
    ds = structure.dropout_structure
    network = Hypernetwork(
        name,
        structure,
        layers,
        use_dropout=use_dropout,
        last_layer_dropout=bool(ds and len(ds) > 1 and ds[-2] != 0),
    )
    network.train(False)
    return network


def from_a1111(data: dict, name: str, path: Path | None = None) -> Hypernetwork:
    """A hypernetwork from the dict A1111 saves, read with A1111's defaults for missing
    keys (old files: no dropout structure, `activate_output` true, layers 1, 2, 1)."""
    if not isinstance(data, dict) or not any(isinstance(k, int) for k in data):
        raise HypernetworkError(f"{name}: not an A1111 hypernetwork (no context-width layers)")
    layer_structure = [float(x) for x in data.get("layer_structure") or [1, 2, 1]]
    dropout = data.get("dropout_structure")
    use_dropout = bool(dropout and any(dropout)) or bool(data.get("use_dropout", False))
    last_layer_dropout = bool(data.get("last_layer_dropout", False))
    if dropout is None:
        dropout = default_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
    structure = Structure(
        layer_structure=layer_structure,
        activation=data.get("activation_func"),
        layer_norm=bool(data.get("is_layer_norm", False)),
        activate_output=bool(data.get("activate_output", True)),
        dropout_structure=[float(x) for x in dropout],
        weight_init=data.get("weight_initialization") or "Normal",
    )
    try:
        structure.check()
    except HypernetworkError as error:
        raise HypernetworkError(f"{name}: {error}") from None
    layers = {}
    for size, states in data.items():
        if not isinstance(size, int):
            continue
        pair = []
        for state in states[:2]:
            state = {_OLD_KEYS.get(k, k): v for k, v in dict(state).items()}
            mlp = build_mlp(size, structure)
            try:
                mlp.load_state_dict(state)
            except RuntimeError as error:
                first = str(error).strip().splitlines()[0]
                raise HypernetworkError(
                    f"{name}: layers for width {size} do not fit: {first}"
                ) from None
            pair.append(mlp)
        layers[size] = (pair[0], pair[1])
    network = Hypernetwork(
        name=data.get("name") or name,
        structure=structure,
        layers=layers,
        use_dropout=use_dropout,
        last_layer_dropout=last_layer_dropout,
        step=int(data.get("step") or 0),
        sd_checkpoint=data.get("sd_checkpoint"),
        sd_checkpoint_name=data.get("sd_checkpoint_name"),
        optional_info=data.get("optional_info"),
        path=path,
    )
    network.train(False)
    return network


def read_a1111(path: Path, allow_pickle: bool = False) -> dict:
    """The raw dict of an A1111 `.pt` file, through torch's restricted unpickler unless
    the file needs more and `allow_pickle` says it may."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not allow_pickle:
            raise HypernetworkError(
                f"hypernetwork {path.name} holds objects other than tensors and plain "
                "values; pass --allow-pickle if you trust it (unpickling can run code)"
            ) from error
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise HypernetworkError(f"cannot read hypernetwork {path.name}: {error}") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - arbitrary pickles fail in arbitrary ways
        raise HypernetworkError(f"cannot read hypernetwork {path.name}: {error}") from error


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:10]


def load_hypernetwork(path: str | Path, allow_pickle: bool = False) -> Hypernetwork:
    """A1111's `Hypernetwork.load`: the file's layers; named after the file unless the
    file names itself."""
    path = Path(path)
    network = from_a1111(read_a1111(path, allow_pickle), path.stem, path)
    network.short_hash = file_hash(path)
    return network


# --- in prompts ------------------------------------------------------------------------


@dataclass
class HypernetUse:
    name: str  # as the prompt names it (the file stem)
    strength: float
    path: Path
    network: Hypernetwork = field(repr=False)


def find_hypernetwork(name: str, places: list[str]) -> Path | None:
    """`name` among `places`: hypernetwork files (registered ones) and folders searched
    for `NAME.pt` at the top, then below."""
    for place in places:
        where = Path(place).expanduser()
        if where.is_file():
            if where.stem == name:
                return where
            continue
        if (where / f"{name}{SUFFIX}").is_file():
            return where / f"{name}{SUFFIX}"
        if where.is_dir():
            matches = sorted(where.rglob(f"{name}{SUFFIX}"), key=lambda p: str(p).lower())
            if matches:
                return matches[0]
    return None


def available_names(places: list[str]) -> list[str]:
    """Every hypernetwork name in `places` (file stems), sorted as A1111 lists them."""
    names = set()
    for place in places:
        where = Path(place).expanduser()
        if where.is_file() and where.suffix.lower() == SUFFIX:
            names.add(where.stem)
        elif where.is_dir():
            names.update(p.stem for p in where.rglob(f"*{SUFFIX}"))
    names.discard("None")
    return sorted(names, key=str.lower)


def closest_name(search: str, places: list[str]) -> str | None:
    """A1111's `find_closest_hypernetwork_name`: the shortest name containing `search`
    (case-insensitive)."""
    search = search.lower()
    candidates = [n for n in available_names(places) if search in n.lower()]
    return min(candidates, key=len) if candidates else None


def resolve_hypernetworks(
    networks: list[tuple[str, list[str]]],
    places: list[str],
    allow_pickle: bool = False,
    load: bool = True,
) -> list[HypernetUse]:
    """The `<hypernet:NAME:STRENGTH>` tags of a prompt, loaded; every problem in one error."""
    uses, problems = [], []
    for kind, args in networks:
        if kind != "hypernet":
            continue
        name = args[0]
        try:
            strength = float(args[1]) if len(args) > 1 else 1.0
        except ValueError:
            problems.append(f"<hypernet:{':'.join(args)}> has a strength that is not a number")
            continue
        path = find_hypernetwork(name, places)
        if path is None:
            where = ", ".join(places) or "(no --hypernetwork-dir)"
            problems.append(f"hypernetwork {name!r} not found in {where}")
            continue
        if not load:
            uses.append(HypernetUse(name, strength, path, None))  # type: ignore[arg-type]
            continue
        try:
            network = load_hypernetwork(path, allow_pickle)
        except HypernetworkError as error:
            problems.append(str(error))
            continue
        uses.append(HypernetUse(name, strength, path, network))
    if problems:
        raise HypernetworkError("; ".join(problems))
    return uses


def hypernet_infotext(uses: list[HypernetUse]) -> str | None:
    """`NAME: HASH, ...` for the `Hypernet hashes` infotext entry."""
    if not uses:
        return None
    seen: dict[str, str] = {}
    for use in uses:
        seen.setdefault(use.name.replace(":", "").replace(",", ""), use.network.short_hash)
    return ", ".join(f"{name}: {short}" for name, short in seen.items())


def activate_hypernetworks(pipe: Any, uses: list[HypernetUse]) -> dict[str, Any] | None:
    """Apply the prompt's hypernetworks at their strengths; `deactivate_hypernetworks`
    with the returned value undoes it."""
    networks = []
    for use in uses:
        use.network.set_multiplier(use.strength)
        networks.append(use.network)
    from curator.generation.hypernet_attention import attach

    return attach(pipe.unet, networks)


def deactivate_hypernetworks(pipe: Any, previous: dict[str, Any] | None) -> None:
    from curator.generation.hypernet_attention import detach

    detach(pipe.unet, previous)


def registered_hypernetworks(catalog: Any) -> list[str]:
    """The paths of hypernetwork files registered in the catalog."""
    from curator.generation.registry import list_model_files

    return [record.path for record in list_model_files(catalog, "hypernetwork")]


def _strength_text(value: float) -> str:
    return str(float(value))  # as A1111 appends it: 1.0, 0.5


def prompt_with_hypernet(prompt: str, name: str | None, strength: float | None) -> str:
    """The prompt with a hypernetwork set as A1111's hypernetwork setting sets it: NAME's
    tag gets `strength`, or is appended (`<hypernet:NAME:STRENGTH>`, 1.0 by default) when
    the prompt does not name it; `None` or an empty name removes every hypernetwork tag.
    With no name, `strength` goes to every hypernetwork the prompt names."""
    tags = list(HYPERNET_TAG.finditer(prompt))
    if name is not None and name.strip().lower() in ("", "none"):
        return HYPERNET_TAG.sub("", prompt)
    if name is None:
        if strength is None:
            return prompt
        if not tags:
            raise HypernetworkError("a hypernetwork strength needs a <hypernet:...> in the prompt")
        return HYPERNET_TAG.sub(
            lambda m: f"<hypernet:{m.group(1)}:{_strength_text(strength)}>", prompt
        )
    if any(m.group(1) == name for m in tags):
        if strength is None:
            return prompt
        return HYPERNET_TAG.sub(
            lambda m: (
                f"<hypernet:{name}:{_strength_text(strength)}>" if m.group(1) == name else m[0]
            ),
            prompt,
        )
    return f"{prompt}<hypernet:{name}:{_strength_text(1.0 if strength is None else strength)}>"
