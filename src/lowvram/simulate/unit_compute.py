"""Which streamable units run in what order, and each one's share of a call's FLOPs.

The planner chooses which units stay resident and which stream (plan/interleave.py). A copy can only
overlap the compute that runs while a device buffer is free, so it needs to know where in a call each
unit's compute falls: the real forward runs once on fake tensors (as run.py does, no weights, no GPU),
with a hook on every unit that reads torch's FLOP counter when the unit starts and ends.
"""

from __future__ import annotations

from ..catalogue import ComponentSpec, ModelSpec, build_component
from ..kernels.dtypes import COMPUTE_DTYPES
from ..structure import split_parents, streamable_units
from .api import SimRequest


def unit_compute_uncached(model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                          overrides: dict | None = None) -> dict:
    """{"order": [unit index, ...] in the order the units run (a unit run twice appears twice),
    "flops": [FLOPs of each of those runs], "total": FLOPs of the whole call} for one call at `req`."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from .run import build_inputs, fake_module
    from .static_shapes import static_shapes

    meta = build_component(comp, "meta", config_overrides=overrides)
    names = [u.name for u in streamable_units(meta)]
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        module = fake_module(meta, COMPUTE_DTYPES[req.dtype])
    counter = FlopCounterMode(display=False)
    runs: list[list[int]] = []  # [unit index, FLOPs at its start, FLOPs at its end]
    handles = []
    parents = split_parents(names)
    for i, name in enumerate(names):
        if i in parents:
            continue  # its own tensors are resident, its children are the units
        mod = module.get_submodule(name)
        handles.append(mod.register_forward_pre_hook(lambda m, a, i=i: runs.append([i, counter.get_total_flops(), -1])))
        handles.append(mod.register_forward_hook(lambda m, a, o, i=i: _end(runs, i, counter.get_total_flops())))
    try:
        with fake_mode:
            fn, kwargs = build_inputs(module, model, comp, req, "cpu")
            with torch.no_grad(), static_shapes(module), counter:
                fn(**kwargs)
    finally:
        for h in handles:
            h.remove()
    return {"order": [r[0] for r in runs], "flops": [max(0, r[2] - r[1]) for r in runs],
            "total": int(counter.get_total_flops())}


def _end(runs: list[list[int]], i: int, flops: int) -> None:
    for r in reversed(runs):
        if r[0] == i and r[2] < 0:
            r[2] = flops
            return
