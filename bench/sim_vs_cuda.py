"""Compare the simulator's peak-memory prediction with what CUDA really allocates.

On a CUDA machine: real-size SDXL UNet (fp16, 1024², batch 2 = CFG) and FLUX.1-dev transformer
(bf16, 1024²) with random weights, built straight on the GPU (meta -> to_empty -> init). For each:
predicted activation peak vs `torch.cuda.max_memory_allocated()` minus the weights. Target: within 5 %.

    python bench/sim_vs_cuda.py [--json out.json]          # on a CUDA machine
    python bench/sim_vs_cuda.py --tiny                      # dry run on CPU with tiny configs

Prints a table; add the table to docs/benchmarks.md with the date, the card and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))

from lowvram.catalogue import MODELS, build_component  # noqa: E402
from lowvram.simulate import SimRequest, run_tracked, simulate_component  # noqa: E402
from lowvram.simulate.run import DTYPES, build_inputs  # noqa: E402

CASES = [("sdxl", "unet", SimRequest(batch=2, width=1024, height=1024, dtype="fp16")),
         ("flux-dev", "transformer", SimRequest(batch=1, width=1024, height=1024, dtype="bf16"))]


def init_random_(module: torch.nn.Module) -> None:
    """Random weights of a sensible scale, so activations stay finite (speed and memory don't care)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.02)
        for b in module.buffers():
            if b.dtype.is_floating_point:
                b.normal_(0.0, 0.02)


def measure_cuda(model, comp, req) -> dict:
    dtype = DTYPES[req.dtype]
    module = build_component(comp, "meta").to_empty(device="cuda").to(dtype)
    init_random_(module)
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated()
    fn, kwargs = build_inputs(module, model, comp, req, device="cuda")
    inputs = torch.cuda.memory_allocated() - weights
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        out = fn(**kwargs)  # warm-up (cuDNN autotune, lazy init)
    del out
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = fn(**kwargs)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base + inputs
    del out, kwargs, module
    torch.cuda.empty_cache()
    return {"weights_bytes": weights, "activation_peak_bytes": peak}


def measure_cpu_tiny(model, comp, req, tiny) -> dict:
    module = build_component(comp, "cpu", dtype=torch.float32, config_overrides=tiny)
    r = run_tracked(module, model, comp, req)
    return {"weights_bytes": r.weights_bytes, "activation_peak_bytes": r.activation_peak_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="dry run on CPU with tiny configs")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    for name, cname, req in CASES:
        model = MODELS[name]
        comp = model.component(cname)
        tiny = None
        if args.tiny or not torch.cuda.is_available():
            from tiny import TINY

            tiny = TINY[comp.config]
            req = SimRequest(batch=req.batch, width=128, height=128, dtype="fp32", target="cpu")
        t0 = time.perf_counter()
        pred = simulate_component(model, comp, req, use_cache=False, config_overrides=tiny)
        sim_s = time.perf_counter() - t0
        meas = measure_cpu_tiny(model, comp, req, tiny) if tiny else measure_cuda(model, comp, req)
        err = (pred.activation_peak_bytes - meas["activation_peak_bytes"]) / meas["activation_peak_bytes"]
        rows.append({"model": name, "component": cname, "batch": req.batch, "size": f"{req.width}x{req.height}",
                     "dtype": req.dtype, "predicted_act_MiB": pred.activation_peak_bytes / 2**20,
                     "measured_act_MiB": meas["activation_peak_bytes"] / 2**20, "error_pct": 100 * err,
                     "predicted_weights_MiB": pred.weights_bytes / 2**20, "measured_weights_MiB": meas["weights_bytes"] / 2**20,
                     "sim_seconds": sim_s})
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.tiny else "CPU (tiny configs)"
    print(f"device: {device}   date: {time.strftime('%Y-%m-%d')}")
    print("| model | component | batch | size | dtype | weights pred / meas (MiB) | activations pred / meas (MiB) | error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['component']} | {r['batch']} | {r['size']} | {r['dtype']} | "
              f"{r['predicted_weights_MiB']:.0f} / {r['measured_weights_MiB']:.0f} | "
              f"{r['predicted_act_MiB']:.1f} / {r['measured_act_MiB']:.1f} | {r['error_pct']:+.1f} % |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
