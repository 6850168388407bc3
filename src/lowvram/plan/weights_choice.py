"""Which published weights `lowvram pull` should fetch for a machine: the full weights or one GGUF quant.

Decided by planning, before a byte is downloaded: a quant is planned from its bits per weight (the
planner's `file_weights`), the full weights as the catalogue describes them.

- `--gguf auto`: the highest-quality published quant whose plan fits.
- `--gguf Q4_K_S`: that quant (planned too when a machine is known, to warn if it does not fit).
- no `--gguf`, policy balanced or fast: a quant (as for auto) only when the full bf16 weights do not
  fit well — their lossless plan does not fit, or must re-read the denoiser from disk every step
  because VRAM + RAM cannot hold it. Otherwise the full weights: the planner can still lower them to
  8 bits on the fly, and they keep every option open.
- no `--gguf`, policy lossless (the default): the full weights, nothing planned — GGUF is lossy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalogue import ModelSpec
from ..catalogue.quants import QUANTS, Quant
from ..errors import UserError
from .planner import make_plan
from ..contract import Machine, Plan, Policy, Workload


@dataclass(frozen=True)
class QuantPlan:
    quant: Quant
    plan: Plan


@dataclass(frozen=True)
class WeightsChoice:
    quant: Quant | None  # None: the full weights from the model's diffusers repo
    reason: str  # one sentence: why these weights
    plan: Plan | None = None  # the chosen weights' plan (None when nothing was planned)
    full_plan: Plan | None = None  # the lossless plan of the full weights, when it decided
    tried: tuple[QuantPlan, ...] = ()  # the quants planned, best first
    warning: str = ""  # an explicitly asked-for quant that does not fit


def gguf_file_weights(spec: ModelSpec, quant: Quant) -> dict[str, tuple[str, float]]:
    """The planner's `file_weights` for the model's denoiser stored as `quant` (bytes per bf16 byte)."""
    return {spec.gguf.component: (quant.tensor_type, quant.bits_per_weight / 16)}


def _require_gguf(spec: ModelSpec) -> None:
    if spec.gguf is None:
        with_gguf = ", ".join(sorted(_models_with_gguf()))
        raise UserError(f"{spec.name} has no published GGUF quants in the catalogue (models with them: {with_gguf}); "
                        "drop --gguf to pull its full weights.")


def resolve_quant(spec: ModelSpec, text: str) -> Quant:
    """A quant name as typed (any case) -> a quant the model's GGUF repo publishes; UserError otherwise."""
    _require_gguf(spec)
    key = text.strip().upper()
    if key not in spec.gguf.quants:
        raise UserError(f"Unknown --gguf {text!r} for {spec.name}: choose auto or one of "
                        f"{', '.join(q.name for q in spec.gguf.best_first())}.")
    return QUANTS[key]


def _models_with_gguf() -> list[str]:
    from ..catalogue import MODELS

    return [m.name for m in MODELS.values() if m.gguf is not None]


def _called(machine: Machine) -> str:
    return "this machine" if machine.name == "custom" else machine.name


def _workload(spec: ModelSpec) -> Workload:
    return Workload(spec.width, spec.height, 1, spec.steps)


def _denoiser_on_disk(plan: Plan) -> bool:
    return any(c.role == "denoiser" and c.source == "disk" for c in plan.components)


def full_weights_fit_well(plan: Plan) -> bool:
    """A lossless plan of the full weights fits and keeps the denoiser in VRAM or RAM."""
    return plan.fits and not _denoiser_on_disk(plan)


def _plan_quants(spec: ModelSpec, machine: Machine, quality: str) -> tuple[QuantPlan, ...]:
    wl = _workload(spec)
    return tuple(QuantPlan(q, make_plan(spec, wl, machine, Policy(quality), find_smallest=False,
                                        file_weights=gguf_file_weights(spec, q)))
                 for q in spec.gguf.best_first())


def _best_fitting(tried: tuple[QuantPlan, ...]) -> QuantPlan | None:
    return next((t for t in tried if t.plan.fits), None)


def check_request(spec: ModelSpec, quality: str, gguf: str | None) -> Quant | None:
    """Refuse what no machine could make sense of, before one is probed: a quant under the lossless
    policy, a model without GGUF quants, a quant it does not publish. Returns the named quant, if any."""
    if gguf is None:
        return None
    if quality == "lossless":
        raise UserError(f"--gguf {gguf} asks for quantised weights, which --quality lossless rules out: drop --gguf "
                        "to pull the full weights, or use --quality balanced.")
    _require_gguf(spec)
    return None if gguf.strip().lower() == "auto" else resolve_quant(spec, gguf)


def choose_weights(spec: ModelSpec, quality: str, gguf: str | None, machine: Machine | None) -> WeightsChoice:
    """What to pull. `gguf`: None, "auto" or a quant name; `machine` may be None only when nothing needs
    planning (an explicit quant, or no --gguf under the lossless policy)."""
    quant = check_request(spec, quality, gguf)
    if gguf is None:
        return _default_choice(spec, quality, machine)
    if quant is not None:
        if machine is None:
            return WeightsChoice(quant, f"{quant.name} as asked ({quant.bits_per_weight:.3g} bits per weight)")
        plan = make_plan(spec, _workload(spec), machine, Policy(quality), find_smallest=False,
                         file_weights=gguf_file_weights(spec, quant))
        warning = "" if plan.fits else f"{quant.name} does not fit {_called(machine)}: {plan.lossy_reason or 'see lowvram plan'}"
        return WeightsChoice(quant, f"{quant.name} as asked ({quant.bits_per_weight:.3g} bits per weight)", plan,
                             warning=warning)
    if machine is None:
        raise ValueError("--gguf auto needs a machine to plan for")
    tried = _plan_quants(spec, machine, quality)
    best = _best_fitting(tried)
    if best is None:
        smallest = tried[-1]
        raise UserError(f"No published GGUF quant of {spec.name} fits {_called(machine)}, not even {smallest.quant.name}: "
                        f"{smallest.plan.lossy_reason or 'see lowvram plan'}.")
    return WeightsChoice(best.quant, _why_quant(best, tried), best.plan, tried=tried)


def _default_choice(spec: ModelSpec, quality: str, machine: Machine | None) -> WeightsChoice:
    if quality == "lossless":
        return WeightsChoice(None, "the lossless policy rules out GGUF quants (--quality balanced or "
                             "--gguf auto considers them)")
    if spec.gguf is None:
        return WeightsChoice(None, f"{spec.name} has no published GGUF quants")
    if machine is None:
        raise ValueError("choosing between full weights and GGUF needs a machine to plan for")
    full = make_plan(spec, _workload(spec), machine, Policy("lossless"), find_smallest=False)
    if full_weights_fit_well(full):
        return WeightsChoice(None, f"their lossless plan fits {_called(machine)} with the denoiser in "
                             "VRAM or RAM", make_plan(spec, _workload(spec), machine, Policy(quality),
                                                      find_smallest=False), full)
    tried = _plan_quants(spec, machine, quality)
    best = _best_fitting(tried)
    why_not = (f"the full weights do not fit ({full.lossy_reason})" if not full.fits else
               "the full weights would be read from disk every step (VRAM + RAM cannot hold the denoiser)")
    if best is None:
        return WeightsChoice(None, f"{why_not}, and no GGUF quant fits either", full, full, tried)
    return WeightsChoice(best.quant, f"{why_not}; {_why_quant(best, tried)}", best.plan, full, tried)


def _why_quant(best: QuantPlan, tried: tuple[QuantPlan, ...]) -> str:
    better = [t.quant.name for t in tried[:tried.index(best)]]  # tried is best first
    tail = f" ({', '.join(better)} {'does' if len(better) == 1 else 'do'} not fit)" if better else ""
    return (f"{best.quant.name} is the highest-quality published quant whose plan fits "
            f"({best.quant.bits_per_weight:.3g} bits per weight){tail}")
