"""Hypernetwork training as A1111 does it: small MLPs on every attention's key and value
inputs, one pair per context width, the rest of the model frozen.

The result is A1111's `NAME.pt` (see `curator.generation.hypernetworks`), written so that
A1111's restricted unpickler accepts it. The learning rate is a number or A1111's
schedule (`1e-5:7000, 5e-6:180000`: each rate until its step; training ends where the
schedule does, as A1111's `LearnRateScheduler` ends it). While training, the MLPs run at
strength 1 with their dropout active, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.generation.hypernetworks import (
    WEIGHT_INITS,
    Hypernetwork,
    HypernetworkError,
    Structure,
    create_hypernetwork,
    default_dropout_structure,
    load_hypernetwork,
    parse_numbers,
)
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
from curator.training.training_state import is_state

DEFAULT_RATE = "0.00001"  # A1111's default hypernetwork learning rate


@dataclass
class HypernetworkOptions(TrainOptions):
    lr: float = 1e-5
    lr_schedule: str | None = None  # A1111's "RATE:STEP, RATE:STEP, RATE"; None: `lr`
    layer_structure: str = "1, 2, 1"
    activation: str = "linear"
    layer_norm: bool = False
    dropout: bool = False
    dropout_structure: str | None = None  # "0, 0.3, 0"; None with `dropout`: A1111's 0.3s
    weight_init: str = "Normal"
    activate_output: bool = False
    sizes: str = "auto"  # context widths, e.g. "768, 320, 640, 1280"; auto: the UNet's


def learn_rate_pairs(text: str, max_steps: int, done: int = 0) -> list[tuple[float, int]]:
    """A1111's `LearnScheduleIterator`: (rate, until step) pairs; pairs that end by step
    `done` are dropped, `RATE:-1` and a bare `RATE` run to `max_steps` and end the list,
    and so does a pair reaching past `max_steps` (cut to it)."""
    pairs: list[tuple[float, int]] = []
    try:
        for part in text.split(","):
            fields = part.split(":")
            if len(fields) != 2:
                pairs.append((float(fields[0]), max_steps))
                return pairs
            step = int(fields[1])
            if step > done:
                pairs.append((float(fields[0]), min(step, max_steps)))
                if step > max_steps:
                    return pairs
            elif step == -1:
                pairs.append((float(fields[0]), max_steps))
                return pairs
    except ValueError:
        raise UsageError(
            f"--lr {text!r} is not a rate or A1111 schedule like '1e-5:7000, 5e-6:180000'"
        ) from None
    return pairs


def learn_rates(text: str, max_steps: int, done: int = 0) -> list[float]:
    """The rate of every step A1111 trains (index 0: the step after `done`); the list
    ends where A1111's `LearnRateScheduler` says training is finished."""
    pairs = iter(learn_rate_pairs(text, max_steps, done))
    try:
        rate, end = next(pairs)
    except StopIteration:
        raise UsageError(f"--lr {text!r} leaves no rate for steps after {done}") from None
    rates = []
    for step in range(done, max_steps):
        if step >= end:  # as A1111: one pair further per step, finished when none is left
            try:
                rate, end = next(pairs)
            except StopIteration:
                break
        rates.append(rate)
    return rates


def parse_sizes(text: str) -> list[int] | None:
    if text.strip().lower() == "auto":
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--sizes {text!r} is not 'auto' or widths like '768, 320, 640, 1280'"
        ) from None
    if any(size <= 0 for size in sizes):
        raise UsageError("--sizes must be positive")
    return sizes


def context_widths(unet: Any) -> list[int]:
    """The widths of the contexts the UNet's attentions take (key inputs): for SD 1.x
    768 (the text encoder) and 320, 640, 1280 (self-attention), A1111's default set."""
    from diffusers.models.attention_processor import Attention

    widths = {m.to_k.in_features for m in unet.modules() if isinstance(m, Attention)}
    return sorted(widths)


def structure_from(options: HypernetworkOptions) -> tuple[Structure, bool]:
    """The MLP layout and whether dropout is used, checked as A1111 checks it."""
    try:
        layers = parse_numbers(options.layer_structure, "--layer-structure")
        if options.dropout_structure:
            dropout = parse_numbers(options.dropout_structure, "--dropout-structure")
        else:
            dropout = default_dropout_structure(layers, options.dropout, False)
        structure = Structure(
            layer_structure=layers,
            activation=options.activation.lower(),
            layer_norm=options.layer_norm,
            activate_output=options.activate_output,
            dropout_structure=dropout,
            weight_init=options.weight_init,
        )
        structure.check()
    except HypernetworkError as error:
        raise UsageError(str(error)) from None
    return structure, options.dropout or any(dropout)


def hypernetwork_name(options: HypernetworkOptions) -> str:
    """A1111 keeps letters, digits and `._- ` of the name; the file is NAME.pt."""
    wanted = options.name or "hypernetwork"
    name = "".join(c for c in wanted if c.isalnum() or c in "._- ").strip()
    if not name or name == "None":
        raise UsageError(f"--name {wanted!r} leaves no usable file name")
    return name


def check_hypernetwork_options(
    options: HypernetworkOptions, done: int = 0
) -> list[float | None] | None:
    """Options checked before anything loads. With an A1111 schedule: the rate of every
    step from the first (None for the `done` steps a resumed file has behind it)."""
    structure_from(options)
    parse_sizes(options.sizes)
    if options.weight_init not in WEIGHT_INITS:
        raise UsageError(f"--weight-init must be one of {', '.join(WEIGHT_INITS)}")
    if done >= options.steps:
        raise UsageError(f"the hypernetwork has {done} steps behind it; ask for more --steps")
    if options.lr_schedule is None:
        return None
    if options.lr_scheduler != "constant" or options.lr_warmup_steps:
        raise UsageError(
            "an A1111 --lr schedule sets the rate of every step; leave --lr-scheduler "
            "constant and --lr-warmup-steps 0"
        )
    rates = learn_rates(options.lr_schedule, options.steps, done)
    if not rates:
        raise UsageError(f"--lr {options.lr_schedule!r} ends before step {done + 1}")
    return [None] * done + rates


def resumed(options: HypernetworkOptions) -> Hypernetwork | None:
    """The hypernetwork `--resume` names, as A1111 trains an existing one: its layers,
    structure and name stay, and its step count goes on."""
    if not options.resume or is_state(options.resume):
        return None  # a state folder: the training loop resumes it
    path = Path(options.resume).expanduser()
    if not path.is_file():
        raise UsageError(f"no such hypernetwork file to resume from: {path}")
    try:
        return load_hypernetwork(path)
    except HypernetworkError as error:
        raise UsageError(str(error)) from None


def train_hypernetwork(options: HypernetworkOptions, catalog: Any = None) -> TrainResult:
    """Train a hypernetwork on `options.data`; saved as A1111's NAME.pt, registered in the
    catalog (when given) so that `<hypernet:NAME>` finds it."""
    start = resumed(options)
    done = start.step if start is not None else 0
    # with --epochs the step count the checks need comes from the data
    dataset = prepare_data(options, catalog=catalog) if options.epochs else None
    rates = check_hypernetwork_options(options, done)
    name = hypernetwork_name(options)
    if rates is not None:  # training ends where the schedule does
        options.steps, options.lr = len(rates), float(rates[done] or 0)
    if dataset is None:
        dataset = prepare_data(options, catalog=catalog)
    extra = {"name": name, "resumed_at": done}
    result = train_recorded(
        catalog,
        "hypernetwork",
        options,
        dataset,
        extra,
        lambda: _train(options, dataset, name, rates, start),
    )
    if catalog is not None:
        from curator.generation.registry import register_model_files

        register_model_files(catalog, [result.outputs[-1]], "hypernetwork")
    return result


def _rate_schedule(rates: list[float | None]):
    """A torch LR scheduler giving step `n` (counted from 0) the rate `rates[n]`."""
    import torch

    class ScheduledRates(torch.optim.lr_scheduler.LRScheduler):
        def get_lr(self) -> list[float]:
            rate = rates[min(self.last_epoch, len(rates) - 1)] or 0.0
            return [rate for _ in self.optimizer.param_groups]

    return lambda optimizer: ScheduledRates(optimizer)


def _train(
    options: HypernetworkOptions,
    dataset: Any,
    name: str,
    rates: list[float | None] | None,
    start: Hypernetwork | None,
) -> TrainResult:
    import torch

    from curator.generation.hypernet_attention import attach
    from curator.training.textual_inversion import write_restricted_pt

    model = load_base(options)
    pipe = model.pipeline
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
    if start is None:
        structure, use_dropout = structure_from(options)
        sizes = parse_sizes(options.sizes) or context_widths(pipe.unet)
        network = create_hypernetwork(name, sizes, structure, use_dropout, options.seed)
    else:
        network, network.name = start, name
    network.to(pipe.device)
    network.train(True)
    attach(pipe.unet, [network])  # the pipeline is this run's own: nothing to give back
    is_file = Path(options.base).expanduser().is_file()
    network.sd_checkpoint = base_model_hashes(options.base)[1][:10] if is_file else None
    network.sd_checkpoint_name = Path(options.base).expanduser().stem
    device = str(pipe.device)

    def encode(captions: list[str]):
        with torch.no_grad():
            return pipe.text_encoder(token_ids(pipe.tokenizer, captions, device))[0]

    def save(path: Path, step: int) -> None:
        network.step = step
        write_restricted_pt(path, network.to_a1111())

    method = Method(
        "hypernetwork",
        network.parameters(),
        encode,
        save,
        lr_schedule=_rate_schedule(rates) if rates else None,
    )
    done = start.step if start is not None else 0
    return run_loop(pipe, dataset, options, method, name, suffix=".pt", start_step=done)
