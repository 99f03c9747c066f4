"""Training in several processes (one per GPU, or gloo on CPUs) started by
`accelerate launch --num_processes N`, as sd-scripts and diffusers' trainers are run.

Every process loads the model, builds the same bucketed batch list from the shared seed
and takes its own share of it; the trained modules are wrapped by `Accelerator.prepare`
(DistributedDataParallel) so their gradients are averaged; only the main process writes
files and the catalog record while the others wait.

accelerate's `PartialState` is the process group; a plain `curator train` is one
process, where everything here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def launched() -> bool:
    """Whether this process is one of several started by a distributed launcher."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state() -> Any:
    """accelerate's process-group state (initialises the group on first use)."""
    import torch
    from accelerate import PartialState

    # accelerate groups CPU processes (gloo) only when told to use the CPU; a launch on a
    # machine without GPUs means it
    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return PartialState(cpu=forced or not torch.cuda.is_available())


def process_index() -> int:
    return state().process_index if launched() else 0


def num_processes() -> int:
    return state().num_processes if launched() else 1


def is_main() -> bool:
    return not launched() or state().is_main_process


def wait() -> None:
    """Every process waits here for the others (a barrier)."""
    if launched():
        state().wait_for_everyone()


def process_device(requested: str | None) -> str | None:
    """The device of this process: its own GPU (`cuda:LOCAL_RANK`) or the CPU when
    launched; else what was asked (None: the loader picks)."""
    if not launched() or (requested and requested != "auto"):
        return requested
    return str(state().device)


@contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (an export, generated class images); the
    others run it after, finding its results in place."""
    if not launched():
        yield
        return
    with state().main_process_first():
        yield


def share(batches: list[Any], refill: Any, index: int, count: int) -> Any:
    """This process's batch of the next `count` from the shared list (popped from its end,
    `refill()` when it runs out). Every process pops the same batches in the same order,
    so the list stays identical everywhere and each process trains on a different one."""
    mine = None
    for k in range(count):
        if not batches:
            batches.extend(refill())
        batch = batches.pop()
        if k == index:
            mine = batch
    return mine


def trained_modules(pipe: Any) -> dict[str, Any]:
    """The pipeline's modules holding parameters that train, by attribute name."""
    found = {}
    for name in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None and any(p.requires_grad for p in module.parameters()):
            found[name] = module
    return found


@contextmanager
def swapped(pipe: Any, wrapped: dict[str, Any]) -> Iterator[None]:
    """The DDP wrappers stand in for the pipeline's modules while the loss is computed
    (their forward starts the gradient averaging), the plain modules everywhere else
    (saving, sampling). Set on the instance directly: the pipeline's own `__setattr__`
    would record the wrapper's class in its config."""
    plain = {name: getattr(pipe, name) for name in wrapped}
    for name, module in wrapped.items():
        object.__setattr__(pipe, name, module)
    try:
        yield
    finally:
        for name, module in plain.items():
            object.__setattr__(pipe, name, module)


def average_gradients(accelerator: Any, parameters: list[Any]) -> None:
    """Average the gradients of trained tensors that no wrapped module owns (a
    hypernetwork's own layers) across processes, as DDP does for the wrapped ones."""
    import torch

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def guard(plain: dict[str, Any], wrapped: dict[str, Any]) -> None:
    """Fail loudly when a trained module computes gradients outside its DDP wrapper (a
    method that kept its own reference to it): its gradients would not be averaged and
    the processes would drift apart unseen."""
    import torch

    inside: set[str] = set()
    for name, wrapper in wrapped.items():
        wrapper.register_forward_pre_hook(lambda _m, _a, n=name: inside.add(n))
        wrapper.register_forward_hook(lambda _m, _a, _o, n=name: inside.discard(n))

        def check(_module: Any, _args: Any, n: str = name) -> None:
            if torch.is_grad_enabled() and n not in inside:
                raise RuntimeError(f"the trained {n} ran outside its DistributedDataParallel")

        plain[name].register_forward_pre_hook(check)
