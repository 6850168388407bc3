"""GPU benchmark of the streaming runtime against unconstrained runs and diffusers' offload modes.

Real-size SDXL UNet (fp16, 1024², batch 2 for CFG) and FLUX.1-dev transformer (bf16, 1024²) with random
weights built straight on the GPU (bench/random_models.py). For each model: unconstrained; lowvram at
budgets (SDXL 4 and 6 GB; Flux 8, 12 and 16 GB) set with torch.cuda.set_per_process_memory_fraction; and
diffusers' modes at the smallest budget (model offload via accelerate hooks, sequential offload, group
offloading block- and leaf-level with use_stream=True; their speed does not depend on the budget). Measures pinned host->device bandwidth, peak
memory, s/step (median after warm-up) and max |output - unconstrained|; prints a table with the ratio
to the physical limit max(unconstrained s/step, streamed bytes / bandwidth) and writes JSON.

    python bench/gpu_offload.py [--json out.json] [--steps 5] [--models sdxl,flux-dev]   # CUDA, <= 8 min on an H100
    python bench/gpu_offload.py --tiny                                                   # dry run on CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lowvram.catalogue import MODELS  # noqa: E402
from lowvram.plan import cost  # noqa: E402
from lowvram.plan.planner import _fit_units  # noqa: E402
from lowvram.runtime.accountant import BudgetAccountant  # noqa: E402
from lowvram.kernels.dtypes import COMPUTE_DTYPES  # noqa: E402
from lowvram.runtime.streaming import StreamingEngine  # noqa: E402
from lowvram.simulate import SimRequest, simulate_component  # noqa: E402
from lowvram.simulate.run import build_inputs  # noqa: E402
from lowvram.structure import streamable_units  # noqa: E402
from random_models import build_random, pinned_bandwidth  # noqa: E402

GiB = 2**30
CASES = {"sdxl": ("unet", "fp16", 2, (4, 6)), "flux-dev": ("transformer", "bf16", 1, (8, 12, 16))}
DTYPES = COMPUTE_DTYPES
# Kept out of the weight budget, as the planner does: CUDA context, library workspaces, fragmentation.
MARGIN = cost.DEFAULT_RESERVE_BYTES


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _out(o):
    if isinstance(o, (tuple, list)):
        return o[0]
    return getattr(o, "sample", o)


def time_steps(fn, kw, steps: int, device) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        out = _out(fn(**kw))  # warm-up (and, for lowvram, the call that records the unit order)
        sync(device)
        ts = []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = _out(fn(**kw))
            sync(device)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out.float()


def set_budget(device, budget: int | None) -> None:
    if device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    index = device.index if device.index is not None else torch.cuda.current_device()  # torch wants an index here
    torch.cuda.set_per_process_memory_fraction(1.0 if budget is None else min(1.0, budget / total), index)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def peak(device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def run_model(name: str, args, device, bw: float) -> list[dict]:
    cname, dtype_name, batch, budgets = CASES[name]
    model = MODELS[name]
    comp = model.component(cname)
    dtype = DTYPES["fp32" if args.tiny else dtype_name]
    size = 128 if args.tiny else 1024
    overrides = None
    if args.tiny:
        from tiny import TINY

        overrides = TINY[comp.config]
    req = SimRequest(batch=batch, width=size, height=size, dtype="fp32" if args.tiny else dtype_name)
    set_budget(device, None)  # the previous model's last budget must not bind this one's construction
    if device.type == "cuda":
        torch.cuda.empty_cache()
    module = build_random(comp, device, dtype, overrides)
    torch.manual_seed(0)
    fn, kw = build_inputs(module, model, comp, req, device=device)
    rows = []
    set_budget(device, None)
    base_s, ref = time_steps(module, kw, args.steps, device)
    rows.append({"model": name, "mode": "unconstrained", "budget_GiB": None, "s_per_step": base_s,
                 "peak_GiB": peak(device) / GiB, "max_abs_diff": 0.0, "streamed_GiB": 0.0})
    module.to("cpu")
    gc.collect()
    sim = simulate_component(model, comp, req, config_overrides=overrides)
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    for b in budgets:
        budget = int(b * GiB) if not args.tiny else sim.activation_peak_bytes + int(weights * b / max(budgets) * 0.6)
        set_budget(device, budget)
        units = streamable_units(module)
        elem = next(module.parameters()).element_size()
        ub = [(u.quantizable + u.other) * elem for u in units]
        fit = _fit_units(ub, budget - sim.activation_peak_bytes - (MARGIN if device.type == "cuda" else 0))
        if fit is None:
            rows.append({"model": name, "mode": "lowvram", "budget_GiB": b, "s_per_step": None, "note": "does not fit"})
            continue
        eng = StreamingEngine(module, device, fit[0], BudgetAccountant(budget, device), owner=name).apply()
        s, out = time_steps(module, kw, args.steps, device)
        streamed = eng.streamed_bytes
        limit = max(base_s, streamed / bw) if bw == bw else base_s
        rows.append({"model": name, "mode": "lowvram", "budget_GiB": b, "s_per_step": s, "peak_GiB": peak(device) / GiB,
                     "max_abs_diff": (out - ref).abs().max().item(), "streamed_GiB": streamed / GiB,
                     "resident_units": fit[0], "units": len(ub), "physical_limit_s": limit, "ratio_to_limit": s / limit})
        eng.remove()
        module.to("cpu")
        gc.collect()
    if device.type == "cuda":  # after lowvram's rows: a mode that leaks device memory cannot skew them
        b = min(budgets)
        rows += diffusers_modes(name, module, kw, device, int(b * GiB), b, ref, args)
    del module
    gc.collect()
    return rows


def diffusers_modes(name, module, kw, device, budget, b, ref, args) -> list[dict]:
    """diffusers'/accelerate's own offloading at the same budget (fewer steps: some are very slow)."""
    from accelerate import cpu_offload, cpu_offload_with_hook
    from accelerate.hooks import remove_hook_from_module

    rows = []
    modes = {
        "diffusers model offload": lambda m: cpu_offload_with_hook(m, device),
        "diffusers sequential offload": lambda m: cpu_offload(m, execution_device=device),
        "diffusers group offload block (stream)": lambda m: _group(m, device, "block_level"),
        "diffusers group offload leaf (stream)": lambda m: _group(m, device, "leaf_level"),
    }
    for mode, enable in modes.items():
        set_budget(device, budget)
        try:
            enable(module)
            s, out = time_steps(module, kw, max(2, args.steps // 2), device)
            rows.append({"model": name, "mode": mode, "budget_GiB": b, "s_per_step": s, "peak_GiB": peak(device) / GiB,
                         "max_abs_diff": (out - ref).abs().max().item()})
        except torch.OutOfMemoryError:
            rows.append({"model": name, "mode": mode, "budget_GiB": b, "s_per_step": None, "note": "out of memory"})
        except Exception as e:  # one mode failing must not cost the other measurements
            rows.append({"model": name, "mode": mode, "budget_GiB": b, "s_per_step": None, "note": f"{type(e).__name__}: {e}"[:120]})
        finally:
            remove_hook_from_module(module, recurse=True)
            _ungroup(module)
            module.to("cpu")
            gc.collect()
            torch.cuda.empty_cache()
    return rows


def _group(m, device, kind):
    from diffusers.hooks import apply_group_offloading

    kwargs = {"num_blocks_per_group": 1} if kind == "block_level" else {}
    apply_group_offloading(m, onload_device=device, offload_device=torch.device("cpu"), offload_type=kind,
                           use_stream=True, **kwargs)


def _ungroup(m) -> None:
    try:
        from diffusers.hooks import HookRegistry

        for sub in m.modules():
            reg = getattr(sub, "_diffusers_hook", None)
            if isinstance(reg, HookRegistry):
                for hook_name in list(reg.hooks.keys()):
                    reg.remove_hook(hook_name, recurse=False)
    except ImportError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="dry run on CPU with tiny configs")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", default="sdxl,flux-dev")
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    bw = pinned_bandwidth() if device.type == "cuda" else float("nan")
    rows = []
    t0 = time.perf_counter()
    for name in args.models.split(","):
        rows += run_model(name, args, device, bw)
        for r in rows:
            print(r, flush=True)
        if args.json:  # after each model: a run cut short still leaves its figures
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "bandwidth": bw}, f, indent=2)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (tiny configs, dry run)"
    print(f"device: {card}; pinned host->device {bw / 1e9:.1f} GB/s; date {time.strftime('%Y-%m-%d')}; "
          f"{time.perf_counter() - t0:.0f} s")
    print("| model | mode | budget GiB | s/step | peak GiB | streamed GiB/step | vs physical limit | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = f"{r['s_per_step']:.3f}" if r.get("s_per_step") else r.get("note", "-")
        ratio = f"{r['ratio_to_limit']:.2f}x" if r.get("ratio_to_limit") else "-"
        print(f"| {r['model']} | {r['mode']} | {r['budget_GiB'] or '-'} | {s} | {r.get('peak_GiB', 0):.2f} | "
              f"{r.get('streamed_GiB', 0):.2f} | {ratio} | {r.get('max_abs_diff', 0):.3g} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "bandwidth": bw, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
