"""The faster (or fitting) alternatives to a plan, as one line each: "balanced: fp8 transformer, 2.4x faster, lossy".

A pure function of plans: the caller plans the same request under the other quality policies and
passes them in; this module compares them to the plan the user would get and says what each one
changes and what it costs. `lowvram plan` prints these lines after its table and the web page shows
them under its plan readout, so both read the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import POLICIES, Plan
from .dtypes import FLOAT_DTYPES

# An alternative must be at least this much faster to be worth naming: the planner's time model is a
# prediction, and a 2 % gain is inside its error (docs/benchmarks.md compares predicted and measured).
MIN_SPEEDUP = 1.05


@dataclass(frozen=True)
class Alternative:
    """Another policy's plan for the same request, compared to the current one."""

    policy: str
    speedup: float  # current s/image / this s/image (> 1: faster)
    lossy: bool
    changes: tuple[str, ...]  # "fp8 transformer", "text_encoder_2 resident"...
    seconds_per_image: float

    def line(self) -> str:
        what = ", ".join(self.changes) or "the same placement"
        cost = "lossy" if self.lossy else "exact"
        if self.speedup >= MIN_SPEEDUP:
            return f"{self.policy}: {what}, {self.speedup:.1f}x faster, {cost}"
        return f"{self.policy}: fits with {what}, {self.seconds_per_image:.1f} s/image, {cost}"

    def to_json(self) -> dict:
        return {"policy": self.policy, "speedup": round(self.speedup, 2), "lossy": self.lossy,
                "changes": list(self.changes), "seconds_per_image": round(self.seconds_per_image, 2),
                "line": self.line()}


def _lossy(plan: Plan) -> bool:
    """Weights rounded (fp8/int8, GGUF quants); the float dtypes keep or widen what the checkpoint stores."""
    return any(c.precision not in FLOAT_DTYPES for c in plan.components)


def _changes(current: Plan, other: Plan) -> tuple[str, ...]:
    """What `other` does differently, component by component, in the fewest words."""
    mine = {c.name: c for c in current.components}
    out = []
    for c in other.components:
        was = mine.get(c.name)
        if was is None:
            continue
        bits = []
        if c.precision != was.precision:
            bits.append(f"{c.precision} {c.name}")
        if c.placement != was.placement or (c.placement == "streamed" and c.resident_units != was.resident_units):
            where = f"{c.resident_units}/{c.total_units} resident" if c.placement == "streamed" else c.placement
            bits.append(f"{c.name} {where}" if not bits else where)
        if bits:
            out.append(" ".join(bits) if len(bits) == 1 else f"{bits[0]} ({bits[1]})")
    if other.cfg_mode != current.cfg_mode and "none" not in (other.cfg_mode, current.cfg_mode):
        out.append(f"CFG {other.cfg_mode}")
    return tuple(out)


def alternatives(current: Plan, others: list[Plan]) -> list[Alternative]:
    """The plans among `others` worth naming next to `current`: those that are faster by MIN_SPEEDUP,
    or that fit when `current` does not; fastest first, one per distinct plan (fast often equals balanced)."""
    found: list[Alternative] = []
    seen = set()
    for other in sorted(others, key=lambda p: POLICIES.index(p.policy) if p.policy in POLICIES else len(POLICIES)):
        if other.policy == current.policy or not other.fits:
            continue
        speedup = current.seconds_per_image / other.seconds_per_image if other.seconds_per_image > 0 else 0.0
        if current.fits and speedup < MIN_SPEEDUP:
            continue
        changes = _changes(current, other)
        key = (changes, round(other.seconds_per_image, 1))
        if key in seen:
            continue
        seen.add(key)
        found.append(Alternative(other.policy, speedup, _lossy(other), changes, other.seconds_per_image))
    return sorted(found, key=lambda a: a.seconds_per_image)
