"""The one table of A1111 sampler names and schedule types ↔ diffusers schedulers.

People name samplers the way A1111 does ("Euler a", "DPM++ 2M", "Schedule type: Karras"), image
browsers read those names back from infotext, and A1111's API lists them. diffusers names scheduler
classes and config flags instead. This module maps one to the other, both ways, so the CLI, the PNG
infotext and the HTTP API all speak A1111 and nothing shows a class name.

Sources: A1111's `modules/sd_samplers_kdiffusion.py` (`samplers_k_diffusion`: names, aliases, options),
`modules/sd_samplers_timesteps.py` (DDIM, PLMS, UniPC), `modules/sd_samplers_lcm.py` (LCM),
`modules/sd_schedulers.py` (schedule names and labels), and diffusers' "A1111/k-diffusion → diffusers"
table in its scheduler docs (which class and flags reproduce each one).
"""

from __future__ import annotations

import difflib
from importlib.util import find_spec
from dataclasses import dataclass, field

from ..errors import UserError

# Families whose denoiser predicts a flow (velocity along a straight path): they take flow-matching
# schedulers only. Family names are ModelSpec.family values from the catalogue.
FLOW_FAMILIES = frozenset({"sd3", "flux", "chroma", "qwen-image", "hidream"})

# The sigma-spacing flags of diffusers' schedulers: a schedule type sets one of them and clears the others.
SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


@dataclass(frozen=True)
class Schedule:
    """An A1111 schedule type and the diffusers config that produces it (`config` None: the model's own)."""

    name: str  # A1111's key, e.g. "sgm_uniform"
    label: str  # what A1111 writes in infotext, e.g. "SGM Uniform"
    config: tuple = ()  # (key, value) pairs for the diffusers scheduler config
    aliases: tuple = ()
    default_rho: float = -1  # as A1111's /sdapi/v1/schedulers reports it
    need_inner_model: bool = False
    requires: str | None = None  # a package diffusers needs for this spacing

    def overrides(self) -> dict:
        return dict(self.config)

    def api(self) -> dict:
        """As one item of A1111's /sdapi/v1/schedulers."""
        return {"name": self.name, "label": self.label, "aliases": list(self.aliases) or None,
                "default_rho": self.default_rho, "need_inner_model": self.need_inner_model}


def _flags(on: str | None) -> tuple:
    return tuple((f, f == on) for f in SIGMA_FLAGS)


AUTOMATIC = Schedule("automatic", "Automatic")
SCHEDULES = (
    AUTOMATIC,
    Schedule("uniform", "Uniform", _flags(None) + (("timestep_spacing", "linspace"),), need_inner_model=True),
    Schedule("karras", "Karras", _flags("use_karras_sigmas"), default_rho=7.0),
    Schedule("exponential", "Exponential", _flags("use_exponential_sigmas")),
    Schedule("sgm_uniform", "SGM Uniform", _flags(None) + (("timestep_spacing", "trailing"),), aliases=("SGMUniform",),
             need_inner_model=True),
    # A1111's "DDIM" schedule takes every (1000/n)-th timestep counting from 1: diffusers' "leading" spacing
    # with steps_offset 1 (SD1.5's and SDXL's own scheduler config).
    Schedule("ddim", "DDIM", _flags(None) + (("timestep_spacing", "leading"), ("steps_offset", 1)), need_inner_model=True),
    Schedule("beta", "Beta", _flags("use_beta_sigmas"), need_inner_model=True, requires="scipy"),
)
SCHEDULE_BY_LABEL = {s.label: s for s in SCHEDULES}

# Which schedules a scheduler class can take, by the config keys it accepts (checked against diffusers in
# tests/test_samplers.py).
_SIGMAS = ("Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform", "DDIM", "Beta")
_SPACING = ("Automatic", "Uniform", "SGM Uniform", "DDIM")
_FLOW_SIGMAS = ("Automatic", "Karras", "Exponential", "Beta")


@dataclass(frozen=True)
class Sampler:
    """An A1111 sampler and the diffusers scheduler class + config overrides that run it."""

    name: str  # A1111's label, e.g. "DPM++ 2M SDE"
    scheduler: str  # diffusers class name
    config: tuple = ()  # (key, value) overrides that make the class this sampler
    aliases: tuple = ()  # A1111's aliases, then lowvram's short CLI names
    options: tuple = ()  # A1111's options, as /sdapi/v1/samplers reports them
    default_schedule: str = "Automatic"  # what A1111's "Automatic" means for it (options["scheduler"])
    schedules: tuple = _SIGMAS  # schedule labels the class can run
    flow: bool = False  # for flow-matching models (FLOW_FAMILIES)
    requires: str | None = None  # a package diffusers needs for this class

    def overrides(self) -> dict:
        return dict(self.config)

    def api(self) -> dict:
        """As one item of A1111's /sdapi/v1/samplers."""
        return {"name": self.name, "aliases": list(self.aliases), "options": dict(self.options)}


_DPMPP = (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint"))
_SDE = (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint"))
SAMPLERS = (
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", _DPMPP, ("k_dpmpp_2m", "dpm++_2m"),
            (("scheduler", "karras"),), "Karras"),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", (), ("k_dpmpp_sde",),
            (("scheduler", "karras"), ("second_order", True), ("brownian_noise", True)), "Karras", requires="torchsde"),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", _SDE, ("k_dpmpp_2m_sde",),
            (("scheduler", "exponential"), ("brownian_noise", True)), "Exponential"),
    Sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
            (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "heun")), ("k_dpmpp_2m_sde_heun",),
            (("scheduler", "exponential"), ("brownian_noise", True), ("solver_type", "heun")), "Exponential"),
    Sampler("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
            (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 3), ("solver_type", "midpoint")), ("k_dpmpp_3m_sde",),
            (("scheduler", "exponential"), ("discard_next_to_last_sigma", True), ("brownian_noise", True)), "Exponential"),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", (), ("k_euler_a", "k_euler_ancestral", "euler_a"),
            (("uses_ensd", True),), schedules=_SPACING),
    Sampler("Euler", "EulerDiscreteScheduler", (), ("k_euler", "euler")),
    Sampler("LMS", "LMSDiscreteScheduler", (), ("k_lms",), requires="scipy"),
    Sampler("Heun", "HeunDiscreteScheduler", (), ("k_heun",), (("second_order", True),)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", (), ("k_dpm_2",),
            (("scheduler", "karras"), ("discard_next_to_last_sigma", True), ("second_order", True)), "Karras"),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", (), ("k_dpm_2_a",),
            (("scheduler", "karras"), ("discard_next_to_last_sigma", True), ("uses_ensd", True), ("second_order", True)),
            "Karras"),
    Sampler("DDIM", "DDIMScheduler", (), ("ddim",), schedules=_SPACING),
    Sampler("PLMS", "PNDMScheduler", (("skip_prk_steps", True),), ("plms",), schedules=_SPACING),
    Sampler("UniPC", "UniPCMultistepScheduler", (), ("unipc",)),
    Sampler("LCM", "LCMScheduler", (), ("k_lcm", "lcm"), schedules=_SPACING),
    # Flow-matching models (SD3, Flux, Qwen-Image...): A1111 (Forge) calls their Euler "Euler" too.
    Sampler("Euler", "FlowMatchEulerDiscreteScheduler", (("stochastic_sampling", False),), ("k_euler", "euler", "flow_euler"),
            schedules=_FLOW_SIGMAS, flow=True),
)

# A1111 samplers with no diffusers counterpart: named in the error instead of "unknown".
NOT_IN_DIFFUSERS = ("DPM++ 2S a", "DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "Euler CFG++")

# Schedulers a pipeline may come with that A1111 has no sampler for: the names people use for them.
OTHER_NAMES = {"DDPMScheduler": "DDPM", "DEISMultistepScheduler": "DEIS", "DPMSolverSinglestepScheduler": "DPM++ 2S",
               "FlowMatchHeunDiscreteScheduler": "Heun", "FlowMatchLCMScheduler": "LCM", "TCDScheduler": "TCD",
               "EDMEulerScheduler": "Euler", "EDMDPMSolverMultistepScheduler": "DPM++ 2M",
               "DPMSolverMultistepInverseScheduler": "DPM++ 2M", "CosineDPMSolverMultistepScheduler": "DPM++ 2M SDE"}


@dataclass(frozen=True)
class SamplerChoice:
    """What to run: `sampler` None keeps the pipeline's own scheduler class."""

    sampler: Sampler | None
    schedule: Schedule = field(default=AUTOMATIC)


def is_flow(family: str) -> bool:
    return family in FLOW_FAMILIES


def samplers_for(family: str | None) -> tuple:
    """The samplers a model family can run (all non-flow ones, or the flow ones); None: every distinct name."""
    if family is None:
        seen, out = set(), []
        for s in SAMPLERS:
            if s.name not in seen:
                seen.add(s.name)
                out.append(s)
        return tuple(out)
    return tuple(s for s in SAMPLERS if s.flow == is_flow(family))


def api_samplers(family: str | None = None) -> list[dict]:
    """A1111's /sdapi/v1/samplers answer."""
    return [s.api() for s in samplers_for(family)]


def api_schedulers() -> list[dict]:
    """A1111's /sdapi/v1/schedulers answer."""
    return [s.api() for s in SCHEDULES]


def _key(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


def _suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def resolve_schedule(label: str | None) -> Schedule:
    """An A1111 schedule label or key, any case ("karras", "SGM Uniform", "sgm_uniform"); None: Automatic."""
    if label is None or not label.strip():
        return AUTOMATIC
    want = _key(label)
    for s in SCHEDULES:
        if want in {_key(s.label), _key(s.name), *(_key(a) for a in s.aliases)}:
            return s
    labels = [s.label for s in SCHEDULES]
    raise UserError(f"Unknown schedule type {label!r}: {_suggest(label, labels)}choose one of {', '.join(labels)}.")


def resolve_sampler(name: str | None, schedule: str | None, family: str) -> SamplerChoice:
    """A sampler by A1111 name, alias or lowvram short name (any case), with a schedule type, for a model
    family. A1111 sampler names that carry their schedule ("DPM++ 2M Karras") are split. Unknown or
    unavailable: UserError with the nearest names."""
    sched = resolve_schedule(schedule)
    if name is None or not name.strip():
        return SamplerChoice(None, sched)
    candidates = samplers_for(family)
    want = _key(name)
    for suffix in ("karras", "exponential"):  # A1111's old combined names, e.g. "DPM++ 2M Karras"
        if want.endswith(" " + suffix) and sched is AUTOMATIC:
            want, sched = want[: -len(suffix) - 1], resolve_schedule(suffix)
    for s in candidates:
        if want in {_key(s.name), *(_key(a) for a in s.aliases)}:
            if sched.label not in s.schedules:
                raise UserError(f"The schedule type {sched.label} is not available with {s.name}: "
                                f"choose one of {', '.join(s.schedules)}.")
            return SamplerChoice(s, sched)
    names = [s.name for s in candidates]
    if any(want == _key(n) for n in NOT_IN_DIFFUSERS):
        raise UserError(f"A1111's {name} sampler has no diffusers counterpart: choose one of {', '.join(names)}.")
    other = [s for s in SAMPLERS if s.flow != is_flow(family)]
    if any(want in {_key(s.name), *(_key(a) for a in s.aliases)} for s in other):
        kind = "flow-matching" if is_flow(family) else "noise-prediction (SD1.5/SDXL-style)"
        raise UserError(f"The {name} sampler is not available for {family}, a {kind} model: choose one of {', '.join(names)}.")
    every = names + [a for s in candidates for a in s.aliases]
    raise UserError(f"Unknown sampler {name!r}: {_suggest(name, every)}choose one of {', '.join(names)}.")


def _scheduler_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def _init_keys(cls) -> set:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}


def make_scheduler(choice: SamplerChoice, base_scheduler):
    """The diffusers scheduler for `choice`, built from the pipeline's scheduler config (so the model's
    training schedule — betas, prediction type, shift — carries over)."""
    if choice.sampler is None and choice.schedule is AUTOMATIC:
        return base_scheduler
    s = choice.sampler
    for thing, what in ((s, "sampler"), (choice.schedule, "schedule type")):
        if thing is not None and thing.requires and find_spec(thing.requires) is None:
            name = getattr(thing, "label", None) or thing.name
            raise UserError(f"The {name} {what} needs the {thing.requires} package: pip install {thing.requires}.")
    cls = _scheduler_class(s.scheduler) if s is not None else type(base_scheduler)
    overrides = s.overrides() if s is not None else {}
    schedule = choice.schedule
    if schedule is AUTOMATIC and s is not None:
        schedule = SCHEDULE_BY_LABEL[s.default_schedule]
    wanted = schedule.overrides()
    accepted = _init_keys(cls)
    needed = {k for k, v in wanted.items() if v is not False and k != "steps_offset"}
    if not needed <= accepted:
        what = s.name if s is not None else a1111_names(base_scheduler)[0]
        raise UserError(f"The schedule type {schedule.label} is not available with {what}: choose another --schedule.")
    overrides.update({k: v for k, v in wanted.items() if k in accepted})
    config = dict(base_scheduler.config)
    if "shift" in accepted and "shift" not in config and config.get("flow_shift"):
        overrides["shift"] = config["flow_shift"]  # a flow UniPC/DPM config (HiDream) names its shift flow_shift
    return cls.from_config(config, **overrides)


def _schedule_label(config, sampler: Sampler | None) -> str:
    """The A1111 schedule type a scheduler config runs: a sigma flag, else its timestep spacing."""
    for flag, label in (("use_karras_sigmas", "Karras"), ("use_exponential_sigmas", "Exponential"),
                        ("use_beta_sigmas", "Beta")):
        if config.get(flag):
            return label
    default = sampler.default_schedule if sampler is not None else "Automatic"
    spacing = config.get("timestep_spacing")
    if spacing == "trailing":
        return "SGM Uniform"
    if spacing == "leading":
        return "DDIM"
    if spacing == "linspace" and default != "Automatic":
        return "Uniform"  # A1111's "Automatic" would mean the sampler's Karras/Exponential: say what ran
    return "Automatic"


def a1111_names(scheduler) -> tuple[str, str]:
    """(sampler name, schedule type) as A1111 writes them, for a diffusers scheduler instance. "Automatic"
    means the model's default spacing, which A1111's infotext leaves out."""
    cls = type(scheduler).__name__
    config = scheduler.config
    best, best_score = None, -1
    for s in SAMPLERS:
        if s.scheduler != cls:
            continue
        over = s.overrides()
        if all(config.get(k, v) == v for k, v in over.items()) and len(over) > best_score:
            best, best_score = s, len(over)
    if best is not None:
        return best.name, _schedule_label(config, best)
    name = OTHER_NAMES.get(cls) or next((s.name for s in SAMPLERS if s.scheduler == cls), None)
    if name is None:  # a scheduler nobody has named: its class name without the "Scheduler" suffix
        name = cls.removesuffix("Scheduler").removesuffix("Discrete") or cls
    return name, _schedule_label(config, None)
