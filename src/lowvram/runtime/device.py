"""Which device a run computes on, in which dtype, and the VRAM cap that holds it to its plan.

The planner plans for a Machine; this is where the runtime meets the hardware it actually has. A plan
made for a card this machine does not have still runs (on the CPU here), and says so.
"""

from __future__ import annotations

import torch

from ..kernels.dtypes import COMPUTE_DTYPES


def run_device() -> torch.device:
    """The device generation computes on: the CUDA GPU when torch sees one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def compute_dtype_for(plan, device: torch.device) -> torch.dtype:
    """The dtype the plan's components compute in on `device`. The plan names it per component; a plan
    made for a GPU but run on the CPU computes in fp32 (the CPU's fast path for these models)."""
    names = {c.compute_dtype for c in plan.components}
    if device.type == "cpu" and not names <= {"fp32", "bf16"}:
        return torch.float32
    name = "bf16" if "bf16" in names else next(iter(sorted(names)), "fp32")
    return COMPUTE_DTYPES[name]


def cap_cuda_memory(device: torch.device, vram_bytes: int):
    """Hold this process to the planned VRAM when it is less than the card has (`--vram 6GB` on a
    24 GB card leaves the rest to other programs, and is how budgets are tested on a big GPU).
    Returns a function that lifts the cap again."""
    if device.type != "cuda" or vram_bytes <= 0:
        return lambda: None
    total = torch.cuda.get_device_properties(device).total_memory
    if vram_bytes >= total:
        return lambda: None
    index = device.index if device.index is not None else torch.cuda.current_device()  # torch wants an index here
    torch.cuda.set_per_process_memory_fraction(vram_bytes / total, index)
    return lambda: torch.cuda.set_per_process_memory_fraction(1.0, index)


def describe_run(plan) -> str:
    """One line: where this run computes and under which plan (never a prediction for another card)."""
    from ..units import format_bytes

    device = run_device()
    parts = []
    for c in plan.components:
        where = c.placement if c.placement != "streamed" else f"streamed {c.resident_units}/{c.total_units}"
        parts.append(f"{c.name} {where} {c.precision}")
    m = plan.machine
    if device.type == "cuda":
        what = f"running on {torch.cuda.get_device_name(device)} under a plan for {m.name} ({format_bytes(m.vram_bytes)})"
        when = f", predicted {plan.seconds_per_image:.1f} s/image"
    else:
        cpu_plan = getattr(m, "device", "cuda") == "cpu"
        what = "running on the CPU" + ("" if cpu_plan else f" (no CUDA GPU here; the plan is {m.name}'s "
                                                            f"{format_bytes(m.vram_bytes)} budget, held by the accountant)")
        when = f", predicted {plan.seconds_per_image:.1f} s/image" if cpu_plan else ""
    return f"{what}{when}: {'; '.join(parts)}"
