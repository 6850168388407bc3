"""Host RAM that pinning the streamed weights takes: tensor by tensor through torch vs laid out per unit.

torch's pinned allocator (ATen's CachingHostAllocator) rounds every pinned allocation up to a power of
two; runtime/host_buffer.py pins each streamed unit as one exactly-sized buffer instead. This counts, for
the real-size denoisers on the meta device (no weights, no GPU), the streamed tensors of lowvram's plan
at each budget (an H100 SXM with the budget as its VRAM, 1024², lossless) and what each way of pinning
them takes:

    PYTHONPATH=src python bench/pinned_rounding.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from lowvram.catalogue import MODELS, build_component
from lowvram.kernels.dtypes import COMPUTE_DTYPES
from lowvram.plan import Policy, Workload, make_plan
from lowvram.plan.machine import resolve_machine
from lowvram.runtime.buffers import align
from lowvram.runtime.streaming import unit_tensors

GiB = 2**30
MiB = 2**20
CASES = [("sdxl", 4), ("flux-dev", 8), ("flux-dev", 12), ("sd35-large", 8), ("sd35-large", 12)]


def pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else n


def row(model: str, budget: int) -> dict:
    spec = MODELS[model]
    plan = make_plan(spec, Workload(1024, 1024, steps=20), resolve_machine("H100 SXM", f"{budget}GiB", "256GiB"),
                     Policy("lossless"), find_smallest=False)
    cp = next(c for c in plan.components if c.role == "denoiser")
    module = build_component(spec.component(cp.name), "meta", dtype=COMPUTE_DTYPES[cp.compute_dtype])
    groups, shared = unit_tensors(module)
    resident = cp.resident_set()
    streamed = [tensors for i, (_, _, split_parent, tensors) in enumerate(groups)
                if i not in resident and not split_parent and i not in shared]
    sizes = [[t.numel() * t.element_size() for _, _, _, t in tensors] for tensors in streamed]
    flat = [n for unit in sizes for n in unit]
    exact = sum(flat)
    rounded = sum(pow2(n) for n in flat)
    laid_out = sum(sum(align(n) for n in unit) for unit in sizes)
    return {"model": model, "component": cp.name, "budget_GiB": budget, "resident_units": cp.resident_units,
            "total_units": cp.total_units, "streamed_units": len(sizes), "tensors": len(flat),
            "tensors_under_1MiB": sum(n < MiB for n in flat), "streamed_GiB": exact / GiB,
            "pinned_tensor_by_tensor_GiB": rounded / GiB, "pinned_laid_out_GiB": laid_out / GiB,
            "tensor_by_tensor_x": rounded / exact, "laid_out_x": laid_out / exact}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [row(m, b) for m, b in CASES]
    print("| model | budget GiB | units resident | streamed units | tensors (< 1 MiB) | streamed GiB | "
          "pinned tensor by tensor GiB | laid out per unit GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} {r['component']} | {r['budget_GiB']} | {r['resident_units']}/{r['total_units']} | "
              f"{r['streamed_units']} | {r['tensors']} ({r['tensors_under_1MiB']}) | {r['streamed_GiB']:.2f} | "
              f"{r['pinned_tensor_by_tensor_GiB']:.2f} ({r['tensor_by_tensor_x']:.2f}x) | "
              f"{r['pinned_laid_out_GiB']:.2f} ({r['laid_out_x']:.4f}x) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
