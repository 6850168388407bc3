"""A1111 sampler names <-> diffusers schedulers (placeholder until the full table lands)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

# short CLI name -> (A1111 sampler name, diffusers scheduler class, config overrides)
_TABLE = {
    "euler": ("Euler", "EulerDiscreteScheduler", {}),
    "euler_a": ("Euler a", "EulerAncestralDiscreteScheduler", {}),
    "dpm++_2m": ("DPM++ 2M", "DPMSolverMultistepScheduler", {}),
    "ddim": ("DDIM", "DDIMScheduler", {}),
    "unipc": ("UniPC", "UniPCMultistepScheduler", {}),
    "flow_euler": ("Euler", "FlowMatchEulerDiscreteScheduler", {}),
}


@dataclass(frozen=True)
class SamplerChoice:
    key: str
    cls: str
    overrides: tuple
    a1111: tuple[str, str]  # (sampler name, schedule type) as A1111 writes them


def resolve_sampler(name: str, spec=None) -> SamplerChoice:
    k = name.strip().lower().replace(" ", "_")
    by_a1111 = {v[0].lower().replace(" ", "_"): key for key, v in _TABLE.items()}
    key = k if k in _TABLE else by_a1111.get(k)
    if key is None:
        raise UserError(f"Unknown --sampler {name!r}: choose one of {', '.join(_TABLE)}.")
    a, cls, over = _TABLE[key]
    return SamplerChoice(key, cls, tuple(over.items()), (a, "Automatic"))


def make_scheduler(choice: SamplerChoice, base):
    import diffusers

    return getattr(diffusers, choice.cls).from_config(base.config, **dict(choice.overrides))


def a1111_names(scheduler) -> tuple[str, str]:
    cls = type(scheduler).__name__
    for a, c, _ in _TABLE.values():
        if c == cls:
            return a, "Automatic"
    return cls, "Automatic"


# What /sdapi/v1/samplers and /schedulers list, in the shape of the full table's Sampler and Schedule
# (name, aliases, options; name, label, aliases, default_rho, need_inner_model). The full sampler
# table replaces this file whole.
@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple = ()
    options: tuple = ()


@dataclass(frozen=True)
class Schedule:
    name: str
    label: str
    aliases: tuple = ()
    default_rho: float = -1
    need_inner_model: bool = False


SAMPLERS = tuple(Sampler(a, (key,)) for key, (a, _, _) in _TABLE.items())
SCHEDULES = (Schedule("automatic", "Automatic"),)
