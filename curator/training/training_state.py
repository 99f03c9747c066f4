"""A training run's full state on disk, so a later run continues it exactly: the trained
tensors, the optimizer's moments, the learning-rate schedule, the step and epoch, the
random generators and what is left of the epoch's batches.

A state is a folder (`NAME-000500-state/`, like sd-scripts' `--save_state` folders)
holding `training_state.pt` and a readable `training_state.json`. The `.pt` file is read
with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers, so resuming never runs code from the file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import UsageError

STATE_FILE = "training_state.pt"


@dataclass
class LoadedState:
    step: int
    epoch: int
    batches: list[list[int]]  # indexes into the dataset's examples, the epoch's rest
    raw: dict[str, Any]


def is_state(path: str | Path | None) -> bool:
    return path is not None and (Path(path).expanduser() / STATE_FILE).is_file()


def flat_parameters(parameters: list[Any]) -> list[Any]:
    """The tensors of a parameter list or of optimizer parameter groups, in order."""
    out = []
    for item in parameters:
        out.extend(item["params"] if isinstance(item, dict) else [item])
    return out


def save_state(
    folder: Path,
    *,
    kind: str,
    step: int,
    epoch: int,
    parameters: list[Any],
    optimizer: Any,
    schedule: Any,
    rng: Any,
    generator: Any,
    batches: list[list[int]],
    scaler: Any = None,
    recorded: dict[str, Any] | None = None,
) -> Path:
    """Write the state folder atomically (a temporary folder, then a rename)."""
    import torch

    state = {
        "kind": kind,
        "step": step,
        "epoch": epoch,
        "parameters": [p.detach().cpu().clone() for p in flat_parameters(parameters)],
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "python_rng": rng.getstate(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "batches": batches,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    temporary = folder.with_name(folder.name + ".part")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    torch.save(state, temporary / STATE_FILE)
    summary = {"kind": kind, "step": step, "epoch": epoch, "options": recorded or {}}
    (temporary / "training_state.json").write_text(
        json.dumps(summary, indent=2, default=str), encoding="utf-8"
    )
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
    return folder


def load_state(folder: str | Path, kind: str, steps: int) -> LoadedState:
    import pickle

    import torch

    path = Path(folder).expanduser() / STATE_FILE
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise UsageError(f"cannot read training state {path}: {error}") from error
    if raw.get("kind") != kind:
        raise UsageError(f"{path.parent.name} is a {raw.get('kind')} state, not {kind}")
    step = int(raw["step"])
    if not 0 < step < steps:
        raise UsageError(
            f"{path.parent.name} was saved at step {step}; --steps must be more than that to resume"
        )
    return LoadedState(step, int(raw["epoch"]), [list(b) for b in raw["batches"]], raw)


def restore(
    loaded: LoadedState,
    *,
    parameters: list[Any],
    optimizer: Any,
    schedule: Any,
    rng: Any,
    generator: Any,
    scaler: Any = None,
) -> None:
    """Put the saved tensors, moments, schedule and generators back in place."""
    import torch

    raw = loaded.raw
    targets = flat_parameters(parameters)
    saved = raw["parameters"]
    if len(saved) != len(targets) or any(
        s.shape != t.shape for s, t in zip(saved, targets, strict=True)
    ):
        raise UsageError(
            "the training state does not match this training (other layers, rank or "
            "--train-text-encoder)"
        )
    with torch.no_grad():
        for source, target in zip(saved, targets, strict=True):
            target.copy_(source.to(target.device, target.dtype))
    optimizer.load_state_dict(raw["optimizer"])
    schedule.load_state_dict(raw["scheduler"])
    version, internal, gauss = raw["python_rng"]
    rng.setstate((version, tuple(internal), gauss))
    generator.set_state(raw["generator"])
    torch.set_rng_state(raw["torch_rng"])
    if scaler is not None and raw.get("scaler"):
        scaler.load_state_dict(raw["scaler"])
