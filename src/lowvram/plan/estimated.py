"""A plan in well under a second for a size never simulated: the page's readout while the exact one runs.

`make_plan` with the simulations it asks for answered from what is already known — exact where the cache
or the shipped answers hold them, else estimated from the same component's answers at nearby sizes
(simulate/estimate.py) — and never by a fake-tensor run. The plan says so (`estimated`, `estimate_note`);
only the readout uses it: `generate` and the Session plan from exact simulations (make_plan's default).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..catalogue import ComponentSpec, ModelSpec
from ..contract import Machine, Plan, Policy, Workload
from ..simulate.api import SimRequest, SimResult, known_result
from ..simulate.estimate import Estimate, estimate_result
from .facts import facts_known
from .planner import make_plan


class NotEstimable(Exception):
    """A simulation the plan needs is neither known nor estimable (too few known sizes)."""


@dataclass
class KnownOrEstimated:
    """A `simulate` for make_plan: known answers, else estimates (recorded), else NotEstimable."""

    estimates: dict = field(default_factory=dict)  # (component, request, overrides) -> Estimate

    def __call__(self, model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                 config_overrides: dict | None = None) -> SimResult:
        key = (comp, req, repr(config_overrides))  # a plan's searches ask the same questions many times
        if key in self.estimates:
            return self.estimates[key].result
        found = known_result(model, comp, req, config_overrides)
        if found is not None:
            return found
        est = estimate_result(model, comp, req, config_overrides)
        if est is None:
            raise NotEstimable(f"{comp.name} {req.op} at {req.width}x{req.height}")
        if not est.exact:  # (a tiled decode composed from known tiles is the exact answer)
            self.estimates[key] = est
        return est.result


def estimated_plan(model: ModelSpec, wl: Workload, machine: Machine, policy: Policy = Policy(),
                   find_smallest: bool = True, file_weights: dict | None = None) -> Plan | None:
    """The plan from known and estimated simulations (exact, unmarked, when every answer is known);
    None when some simulation can be neither looked up nor estimated, or a component's unit sizes are not
    known yet (computing them builds the module: the exact path does that, under the server's plan lock)."""
    if not all(facts_known(spec) for spec in model.components):
        return None
    source = KnownOrEstimated()
    try:
        plan = make_plan(model, wl, machine, policy, find_smallest=find_smallest, file_weights=file_weights,
                         simulate=source)
    except NotEstimable:
        return None
    if not source.estimates:
        return plan
    return replace(plan, estimated=True, estimate_note=_note(source.estimates))


def _note(estimates: dict[tuple, Estimate]) -> str:
    parts = []
    for (comp, req, _), est in estimates.items():
        name = comp.name
        sizes = ", ".join(f"{w}x{h}" for w, h in est.sizes)
        what = f"{name} {req.op}" + (f" in {req.vae_tile}px tiles" if req.vae_tile else "") + f" (batch {req.batch})"
        batches = f" scaled from batch {' and '.join(map(str, est.batches))}" if est.batches else ""
        parts.append(f"{what}{' from ' + sizes if sizes else ''}{batches}" + (" — extrapolated beyond the known sizes" if est.extrapolated else ""))
    return "estimated from nearby sizes; exact in a moment: " + "; ".join(dict.fromkeys(parts))
