"""A1111 sampler and schedule-type names → a configured diffusers scheduler.

Names follow A1111's sampler list; the old combined names (`DPM++ 2M Karras`) split into
sampler and schedule type as A1111's infotext reader does. "Automatic" uses the
schedule A1111 gives that sampler by default (Karras for DPM++ 2M / SDE / 2S a,
Exponential for DPM++ 2M SDE / 3M SDE, the model's own otherwise). k-diffusion samplers
space their timesteps evenly from the last training step to the first ("linspace"), as
k-diffusion's discretisation of the model's sigmas does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curator.errors import CuratorError


class SamplerError(CuratorError):
    """An unknown sampler or schedule type."""


@dataclass(frozen=True)
class SamplerSpec:
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "Automatic"
    k_diffusion: bool = True


SAMPLERS: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "Euler": SamplerSpec("EulerDiscreteScheduler"),
    "LMS": SamplerSpec("LMSDiscreteScheduler"),
    "Heun": SamplerSpec("HeunDiscreteScheduler"),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler"),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "DPM++ 2M": SamplerSpec("DPMSolverMultistepScheduler", {}, "Karras"),
    "DPM++ SDE": SamplerSpec("DPMSolverSinglestepScheduler", {}, "Karras"),
    "DPM++ 2M SDE": SamplerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "Exponential"
    ),
    "DPM++ 3M SDE": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        "Exponential",
    ),
    "DDIM": SamplerSpec("DDIMScheduler", {"set_alpha_to_one": False}, k_diffusion=False),
    "PLMS": SamplerSpec("PNDMScheduler", {"skip_prk_steps": True}, k_diffusion=False),
    "UniPC": SamplerSpec("UniPCMultistepScheduler", k_diffusion=False),
}
ALIASES = {"PNDM": "PLMS", "k_euler_a": "Euler a", "k_euler": "Euler", "k_lms": "LMS"}

# Schedule types A1111 names → scheduler options; "Uniform" is the model's own spacing.
SCHEDULES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "Simple": {"timestep_spacing": "trailing"},
}


@dataclass(frozen=True)
class Sampler:
    name: str
    schedule: str  # "Automatic" or a key of SCHEDULES

    def infotext(self) -> dict[str, str]:
        params = {"Sampler": self.name}
        if self.schedule != "Automatic":
            params["Schedule type"] = self.schedule
        return params


def known_samplers() -> list[str]:
    return list(SAMPLERS)


def resolve_sampler(name: str, schedule: str | None = None) -> Sampler:
    """Read `name` (maybe `DPM++ 2M Karras`) and an optional schedule type."""
    text = ALIASES.get(name.strip(), name.strip())
    found_schedule = None
    if text not in SAMPLERS:
        for label in SCHEDULES:
            if text.lower().endswith(" " + label.lower()):
                base = text[: -len(label) - 1].strip()
                if base in SAMPLERS:
                    text, found_schedule = base, label
                    break
    if text not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    chosen = schedule or found_schedule or "Automatic"
    match = {k.lower(): k for k in SCHEDULES}.get(chosen.strip().lower())
    if match is None:
        raise SamplerError(f"unknown schedule type {chosen!r}; known: {', '.join(SCHEDULES)}")
    return Sampler(text, match)


def make_scheduler(sampler: Sampler, base_config: dict[str, Any]):
    """A diffusers scheduler for `sampler`, built on the checkpoint's scheduler config."""
    import diffusers

    spec = SAMPLERS[sampler.name]
    cls = getattr(diffusers, spec.scheduler)
    options: dict[str, Any] = {}
    if spec.k_diffusion:
        options["timestep_spacing"] = "linspace"
    options.update(spec.options)
    schedule = spec.default_schedule if sampler.schedule == "Automatic" else sampler.schedule
    options.update(SCHEDULES[schedule])
    accepted = set(cls.__init__.__code__.co_varnames)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    config.update({k: v for k, v in options.items() if k in accepted})
    return cls.from_config(config)
