"""Compare the simulator's peak-memory prediction with what CUDA really allocates.

On a CUDA machine: real-size components with random weights, built straight on the GPU
(bench/random_models.py): SDXL UNet (fp16, 1024², batch 2 = CFG), FLUX.1-dev transformer (bf16,
1024²), T5-XXL encoder, the SDXL and Flux VAE decoders at 1024² (full and 512-px tiles). For each:
predicted activation peak vs `torch.cuda.max_memory_allocated()` minus the weights (target: within
5 %), and the measured time per call against the simulated FLOPs, as a fraction of the card's dense
fp16/bf16 peak — the compute efficiency the planner's cost model uses.

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
from lowvram.machines.cards import find_card  # noqa: E402
from lowvram.simulate import SimRequest, run_tracked, simulate_component  # noqa: E402
from lowvram.kernels.vae_tiling import set_tile  # noqa: E402
from lowvram.simulate.run import DTYPES, build_inputs  # noqa: E402
from random_models import build_random  # noqa: E402

CASES = [("sdxl", "unet", SimRequest(batch=2, width=1024, height=1024, dtype="fp16")),
         ("flux-dev", "transformer", SimRequest(batch=1, width=1024, height=1024, dtype="bf16")),
         ("flux-dev", "text_encoder_2", SimRequest(batch=1, dtype="bf16")),
         ("sdxl", "vae", SimRequest(op="decode", batch=1, width=1024, height=1024, dtype="bf16")),
         ("sdxl", "vae", SimRequest(op="decode", batch=1, width=1024, height=1024, dtype="bf16", vae_tile=512)),
         ("flux-dev", "vae", SimRequest(op="decode", batch=1, width=1024, height=1024, dtype="bf16"))]
# Where prediction and measurement part, the same call again with one kernel family switched off, to
# find what the fake run cannot see (library workspaces): cuDNN for convolutions, fused SDPA kernels.
DIAGNOSE = [("sdxl", "vae", SimRequest(op="decode", batch=1, width=1024, height=1024, dtype="bf16"), "no-cudnn"),
            ("flux-dev", "text_encoder_2", SimRequest(batch=1, dtype="bf16"), "sdpa-math"),
            ("flux-dev", "text_encoder_2", SimRequest(batch=1, dtype="bf16"), "sdpa-efficient")]
REPEATS = 5


def _variant(name: str):
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "no-cudnn":
        return torch.backends.cudnn.flags(enabled=False)
    if name == "sdpa-math":
        return sdpa_kernel(SDPBackend.MATH)
    if name == "sdpa-efficient":
        return sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)
    return contextlib.nullcontext()


def measure_cuda(model, comp, req, variant: str = "") -> dict:
    with _variant(variant):
        return _measure_cuda(model, comp, req)


def _measure_cuda(model, comp, req) -> dict:
    dtype = DTYPES[req.dtype]
    weights0 = torch.cuda.memory_allocated()
    module = build_random(comp, "cuda", dtype)
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated() - weights0
    fn, kwargs = build_inputs(module, model, comp, req, device="cuda")
    inputs = torch.cuda.memory_allocated() - weights - weights0
    if comp.role == "vae":
        set_tile(module, req.vae_tile)
    with torch.no_grad():
        out = fn(**kwargs)  # warm-up (cuBLAS handles and workspaces, lazy init)
    del out
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = fn(**kwargs)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base + inputs
    del out
    times = []
    with torch.no_grad():
        for _ in range(REPEATS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(**kwargs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
            del out
    del kwargs, module
    torch.cuda.empty_cache()
    return {"weights_bytes": weights, "activation_peak_bytes": peak, "seconds": sorted(times)[len(times) // 2]}


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
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.cuda.get_device_name(0) if cuda else "CPU (tiny configs)"
    card = find_card(device) if cuda else None
    peak_tflops = card.fp16_tflops if card else None
    for name, cname, req, variant in [c + ("",) for c in CASES] + ([] if args.tiny or not cuda else DIAGNOSE):
        model = MODELS[name]
        comp = model.component(cname)
        tiny = None
        if args.tiny or not torch.cuda.is_available():
            from tiny import TINY

            tiny = TINY.get(comp.config) or dict(TINY["sd-vae"], latent_channels=16 if comp.config == "flux-vae" else 4)
            req = SimRequest(op=req.op, batch=req.batch, width=128, height=128, dtype="fp32", target="cpu",
                             vae_tile=64 if req.vae_tile else 0)
        t0 = time.perf_counter()
        try:
            pred = simulate_component(model, comp, req, use_cache=False, config_overrides=tiny)
            sim_s = time.perf_counter() - t0
            meas = measure_cpu_tiny(model, comp, req, tiny) if tiny else measure_cuda(model, comp, req, variant)
        except Exception as e:  # one broken case must not cost the others (device time is scarce)
            print(f"{name} {cname} {req}: {type(e).__name__}: {e}", flush=True)
            continue
        err = (pred.activation_peak_bytes - meas["activation_peak_bytes"]) / meas["activation_peak_bytes"]
        secs = meas.get("seconds")
        achieved = pred.flops / secs / 1e12 if secs else None
        rows.append({"model": name, "component": cname, "variant": variant, "op": req.op, "tile": req.vae_tile, "batch": req.batch,
                     "size": f"{req.width}x{req.height}", "dtype": req.dtype,
                     "predicted_act_MiB": pred.activation_peak_bytes / 2**20,
                     "measured_act_MiB": meas["activation_peak_bytes"] / 2**20, "error_pct": 100 * err,
                     "predicted_weights_MiB": pred.weights_bytes / 2**20, "measured_weights_MiB": meas["weights_bytes"] / 2**20,
                     "sim_seconds": sim_s, "tflop": pred.flops / 1e12, "seconds_per_call": secs,
                     "achieved_tflops": achieved, "efficiency": achieved / peak_tflops if achieved and peak_tflops else None})
        print(rows[-1], flush=True)
    print(f"device: {device} (dense fp16/bf16 peak {peak_tflops or '?'} TFLOP/s from the card table)   "
          f"date: {time.strftime('%Y-%m-%d')}")
    print("| model | component | call | size | dtype | weights pred / meas (MiB) | activations pred / meas (MiB) | error "
          "| TFLOP | ms/call | TFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        call = r["op"] + (f" tiles {r['tile']}" if r["tile"] else "") + (f" b{r['batch']}" if r["batch"] > 1 else "") \
            + (f" ({r['variant']})" if r["variant"] else "")
        ms = f"{1e3 * r['seconds_per_call']:.1f}" if r["seconds_per_call"] else "-"
        tf = f"{r['achieved_tflops']:.0f}" if r["achieved_tflops"] else "-"
        eff = f"{100 * r['efficiency']:.0f} %" if r["efficiency"] else "-"
        print(f"| {r['model']} | {r['component']} | {call} | {r['size']} | {r['dtype']} | "
              f"{r['predicted_weights_MiB']:.0f} / {r['measured_weights_MiB']:.0f} | "
              f"{r['predicted_act_MiB']:.1f} / {r['measured_act_MiB']:.1f} | {r['error_pct']:+.1f} % | "
              f"{r['tflop']:.2f} | {ms} | {tf} | {eff} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "peak_tflops": peak_tflops, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
