"""Issue #13 item 2: a resident prefix vs resident units spread among the streamed ones, on the copy timeline.

For each real-size denoiser and budget issue #13 measures, lowvram's plan on an H100 (the budget as its VRAM,
1024², lossless, the host link of the November run) and the copy timeline of plan/interleave.py: one call
with the first K units resident through two buffers (what the runtime did before) and with the units the
planner now spreads, through the buffers it chose, each against the physical limit max(compute, streamed
bytes / link). Compute per call is the plan's
(the card's TFLOP/s x the planner's efficiency) unless --measured gives the H100's measured call times.
No GPU, no weights: fake tensors time the units (simulate/unit_compute.py).

    PYTHONPATH=src python bench/interleave.py [--measured] [--json out.json]
    PYTHONPATH=src python bench/interleave.py --survey   # every streamed denoiser plan on one card's VRAM/RAM tiers

--survey: for the catalogue's big denoisers on an RTX 4060 (its link, compute and disk) at 4-24 GB of VRAM and 16
or 64 GB of RAM, the plan's call on the timeline (its resident set, buffers, source: RAM at the link's speed, a
file mapping at the disk's) and the cost model's predicted call, each over max(compute, streamed bytes / link):
how far the runtime's schedule stays from the bound the cost model prices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from lowvram.catalogue import MODELS  # noqa: E402
from lowvram.plan import Policy, Workload, make_plan  # noqa: E402
from lowvram.plan.facts import component_facts  # noqa: E402
from lowvram.plan.interleave import call_seconds  # noqa: E402
from lowvram.plan.machine import resolve_machine  # noqa: E402
from lowvram.plan.planner import _fit_units  # noqa: E402
from lowvram.simulate import SimRequest  # noqa: E402
from lowvram.simulate.api import unit_compute  # noqa: E402
from lowvram.structure import split_parents  # noqa: E402

GiB = 2**30
LINK_GBPS = 54.9  # pinned host->device, measured on the H100 in November (docs/benchmarks.md)
# one call on that H100, measured (bench/sim_vs_cuda.py rows in docs/benchmarks.md): SDXL UNet batch 2 93.7 ms,
# Flux-dev transformer 185.9 ms; SD3.5-Large not measured there: its FLOPs at Flux's 320 TFLOP/s
MEASURED_S = {"sdxl": 0.0937, "flux-dev": 0.1859, "sd35-large": 47.74e12 / 320e12}
CASES = [("sdxl", 4), ("flux-dev", 8), ("flux-dev", 12), ("sd35-large", 8), ("sd35-large", 12)]


def row(model: str, budget: int, measured: bool) -> dict:
    spec = MODELS[model]
    machine = resolve_machine("H100 SXM", f"{budget}GiB", "256GiB", link_gbps=LINK_GBPS)
    plan = make_plan(spec, Workload(1024, 1024, steps=20), machine, Policy("lossless"), find_smallest=False)
    cp = next(c for c in plan.components if c.role == "denoiser")
    comp = spec.component(cp.name)
    ub = component_facts(comp).unit_bytes(cp.precision, cp.compute_dtype)
    forced = split_parents([u.name for u in component_facts(comp).units])
    t = unit_compute(spec, comp, SimRequest(width=spec.width, height=spec.height, dtype="bf16"))
    compute = MEASURED_S[model] if measured else cp.compute_seconds
    total = sum(t["flops"]) or 1
    run_s = [compute * f / total for f in t["flops"]]
    copy_s = [b / machine.link_bytes_per_s for b in ub]
    spread = set(cp.resident_indices) if cp.resident_indices else None
    # the prefix the search sized: as many bytes resident as the spread set would free, first units first
    k = _fit_units(ub, cp.vram_bytes)[0]
    prefix = set(range(k)) | forced

    def one(resident: set[int], depth: int) -> dict:
        streamed = sum(b for i, b in enumerate(ub) if i not in resident)
        secs = call_seconds(t["order"], run_s, copy_s, resident, depth)
        limit = max(compute, streamed / machine.link_bytes_per_s)
        return {"resident": len(resident), "buffers": depth, "streamed_GiB": streamed / GiB, "call_s": secs,
                "limit_s": limit, "x_limit": secs / limit}

    return {"model": model, "budget_GiB": budget, "units": len(ub), "compute_s": compute,
            "prefix": one(prefix, 2), "spread": one(spread, cp.stream_buffers) if spread else None}


SURVEY_MODELS = ("sdxl", "sd35-large", "flux-dev", "hidream-i1", "qwen-image")
SURVEY_VRAM = ("4GB", "6GB", "8GB", "12GB", "16GB", "24GB")
SURVEY_RAM = ("16GB", "64GB")


def survey() -> list[dict]:
    rows = []
    for model in SURVEY_MODELS:
        spec = MODELS[model]
        for vram in SURVEY_VRAM:
            for ram in SURVEY_RAM:
                machine = resolve_machine("RTX 4060", vram, ram)
                plan = make_plan(spec, Workload(spec.width, spec.height, steps=28), machine, Policy("lossless"),
                                 find_smallest=False)
                cp = next((c for c in plan.components if c.role == "denoiser"), None)
                if not plan.fits or cp is None or cp.placement != "streamed" or not cp.compute_seconds:
                    continue
                comp = spec.component(cp.name)
                facts = component_facts(comp)
                ub = facts.unit_bytes(cp.precision, cp.compute_dtype)
                t = unit_compute(spec, comp, SimRequest(width=spec.width, height=spec.height, dtype="bf16"))
                if len(ub) != cp.total_units or not t:
                    continue
                bw = min(machine.disk_bytes_per_s, machine.link_bytes_per_s) if cp.source == "disk" else machine.link_bytes_per_s
                resident = cp.resident_set()
                total = sum(t["flops"]) or 1
                run_s = [cp.compute_seconds * f / total for f in t["flops"]]
                secs = call_seconds(t["order"], run_s, [b / bw for b in ub],
                                    resident | split_parents([u.name for u in facts.units]), cp.stream_buffers)
                bound = max(cp.compute_seconds, cp.streamed_bytes / bw)
                rows.append({"model": model, "vram": vram, "ram": ram, "source": cp.source,
                             "resident": f"{cp.resident_units}/{cp.total_units}", "spread": bool(cp.resident_indices),
                             "buffers": cp.stream_buffers, "bound_s": bound, "timeline_x": secs / bound,
                             "predicted_x": cp.seconds_per_call / bound})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured", action="store_true", help="the H100's measured call times instead of the plan's")
    ap.add_argument("--survey", action="store_true", help="every streamed denoiser plan on an RTX 4060's VRAM/RAM tiers")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.survey:
        rows = survey()
        print("RTX 4060 link, compute and disk; 28 steps, lossless; x = over max(compute, streamed bytes / link)")
        print("| model | VRAM | RAM | source | resident | spread | buffers | bound s a call | timeline x | predicted x |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['vram']} | {r['ram']} | {r['source']} | {r['resident']} | "
                  f"{'yes' if r['spread'] else 'no'} | {r['buffers']} | {r['bound_s']:.3f} | {r['timeline_x']:.3f} | "
                  f"{r['predicted_x']:.3f} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
        return
    rows = [row(m, b, args.measured) for m, b in CASES]
    print(f"H100 SXM, link {LINK_GBPS} GB/s, compute per call {'measured' if args.measured else 'as planned'}")
    print("| model | budget GiB | compute ms | prefix: resident, buffers, streamed GiB, ms, x limit | spread: resident, buffers, streamed GiB, ms, x limit |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = []
        for key in ("prefix", "spread"):
            c = r[key]
            cells.append(f"{c['resident']}/{r['units']}, {c['buffers']}, {c['streamed_GiB']:.2f}, {c['call_s'] * 1000:.0f}, {c['x_limit']:.3f}"
                         if c else "not spread (no gain)")
        print(f"| {r['model']} | {r['budget_GiB']} | {r['compute_s'] * 1000:.0f} | {cells[0]} | {cells[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
