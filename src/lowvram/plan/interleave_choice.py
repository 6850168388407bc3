"""The planner's choice of which units of a streamed component stay resident (plan/interleave.py).

Made once the placement is chosen: the resident byte count and the buffers come from the search
(planner.py `_residency`, the first K units through two buffers); this spreads the same VRAM over other
units, and over a third buffer where that pays, when the copy timeline says a call gets faster, and says
so in the plan's decisions. Weights held in RAM are copied at the link's speed; disk-backed ones (memory-
mapped, RAM short) are read at the disk's, where a resident prefix idles the disk the same way (Flux on an
RTX 3060 with 16 GB RAM: 7.5 -> 6.7 s a call on the timeline). The predicted seconds stay the cost model's
(max(compute, copies) + overheads): spreading is what lets the runtime approach them, and the GPU rows
refit the model.
"""

from __future__ import annotations

from dataclasses import replace

from ..catalogue import ModelSpec
from ..contract import STREAM_BUFFERS, ComponentPlan, Machine, Plan
from ..simulate import SimRequest
from ..simulate.api import unit_compute
from ..structure import split_parents
from ..units import format_bytes
from .cost import BYTES_PER_WEIGHT
from .facts import component_facts
from .interleave import interleave

# denoisers: called every step, and without tied weights (a text encoder's tied embedding, T5's, is kept
# resident by the runtime whatever the plan says, which a spread set would not have counted)
ROLES = ("denoiser",)


def with_interleaving(plan: Plan, model: ModelSpec, simulate_more: bool = True) -> Plan:
    """`plan` with the resident units of each streamed GPU component spread where that is faster.
    simulate_more=False (the page's estimated plans): only unit timings already cached or shipped."""
    if not plan.fits or plan.machine.device == "cpu":
        return plan
    comps, lines = [], []
    for cp in plan.components:
        new, line = _interleaved(cp, model, plan.machine, simulate_more)
        comps.append(new)
        if line:
            lines.append(line)
    if not lines:
        return plan
    return replace(plan, components=tuple(comps), decisions=plan.decisions + tuple(lines))


def _interleaved(cp: ComponentPlan, model: ModelSpec, machine: Machine, simulate_more: bool) -> tuple[ComponentPlan, str]:
    if (cp.placement != "streamed" or cp.source not in ("ram", "disk") or cp.resident_indices or not cp.compute_seconds
            or cp.precision not in BYTES_PER_WEIGHT or cp.role not in ROLES):
        return cp, ""
    spec = next((c for c in model.components if c.name == cp.name), None)
    if spec is None:
        return cp, ""
    facts = component_facts(spec)
    ub = facts.unit_bytes(cp.precision, cp.compute_dtype)
    if len(ub) != cp.total_units or sum(ub[cp.resident_units:]) != cp.streamed_bytes:
        return cp, ""  # not the units the search sized (a file's own ratio): keep its prefix
    timing = unit_compute(model, spec, SimRequest(width=model.width, height=model.height, dtype="bf16"),
                          run=simulate_more)
    if not timing or not timing["order"] or max(timing["order"]) >= len(ub):
        return cp, ""
    # split parents' own tensors: the runtime keeps them resident (runtime/streaming.py)
    forced = split_parents([u.name for u in facts.units])
    if cp.source == "disk":
        # read from the file mapping at the disk's speed (as planner._disk_backed prices it), through pinned
        # staging buffers the plan sized for the prefix's largest streamed unit: none larger may stream
        bw = min(machine.disk_bytes_per_s, machine.link_bytes_per_s)
        biggest = max(ub[cp.resident_units:])
    else:
        bw, biggest = machine.link_bytes_per_s, None
    best = interleave(ub, timing["order"], timing["flops"], cp.compute_seconds, bw, cp.vram_bytes,
                      cp.resident_units, forced, biggest)
    if best is None:
        return cp, ""
    buffers = "" if best.buffers == STREAM_BUFFERS else f", the others through {best.buffers} device buffers"
    line = (f"{cp.name}: {len(best.resident)}/{cp.total_units} units resident, spread among the streamed ones "
            f"instead of the first {cp.resident_units}{buffers}: on the copy timeline"
            f"{' (read from disk)' if cp.source == 'disk' else ''} a call takes "
            f"{best.seconds * 1000:.0f} ms instead of {best.prefix_seconds * 1000:.0f} ms (compute "
            f"{cp.compute_seconds * 1000:.0f} ms, {format_bytes(best.streamed)} copied; plan/interleave.py)")
    return replace(cp, resident_indices=best.resident, resident_units=len(best.resident),
                   streamed_bytes=best.streamed, vram_bytes=best.vram, stream_buffers=best.buffers), line
