"""CPU seconds per step of real-size SD1.5 (random fp16 weights, the real architecture), fp32 vs bf16.

Why: a machine without a usable GPU runs generation on the CPU, and the plan must count weights in the
dtype the CPU computes in (plan/cost.py CPU_COMPUTE_DTYPE) and predict its speed (CPU_FP32_TFLOPS). This
measures both on the machine it runs on, in one process: the diffusers pipeline with CFG (batch 2 through
the UNet), each step timed by the pipeline's step callback; the first step of each run is the warm-up
and is reported apart. The UNet's FLOPs per step come from the simulator, giving the sustained TFLOP/s.

    python bench/cpu_real_sd15.py [--sizes 128,512] [--dtypes fp32,bf16] [--steps 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

import torch  # noqa: E402

from real_sd15 import build_real_sd15  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def unet_flops(size: int) -> int:
    """FLOPs of one UNet call at batch 2 (CFG) from the fake-tensor simulator."""
    from lowvram.catalogue import MODELS
    from lowvram.simulate import SimRequest, simulate_component

    spec = MODELS["sd15"]
    return simulate_component(spec, spec.component("unet"), SimRequest(batch=2, width=size, height=size)).flops


def run(folder: str, size: int, dtype: str, steps: int) -> dict:
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, torch_dtype=DTYPES[dtype], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    marks = []

    def on_step_end(p, i, t, kwargs):
        marks.append(time.perf_counter())
        return kwargs

    t0 = time.perf_counter()
    with torch.no_grad():
        pipe("a red fox", width=size, height=size, num_inference_steps=steps, guidance_scale=7.0,
             generator=torch.Generator().manual_seed(0), output_type="np", callback_on_step_end=on_step_end)
    total = time.perf_counter() - t0
    per_step = [b - a for a, b in zip([t0] + marks, marks)]
    steady = per_step[1:] or per_step
    return {"size": size, "dtype": dtype, "steps": steps, "first_step_s": per_step[0],
            "s_per_step": sum(steady) / len(steady), "total_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,512")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--folder", help="where the random SD1.5 folder is (made there if missing)")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    folder = build_real_sd15(args.folder or os.path.join(tempfile.gettempdir(), "lowvram-real-sd15"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    print(f"{'size':>5} {'dtype':>5} {'s/step':>8} {'1st step':>8} {'TFLOP/s':>8}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        flops = unet_flops(size)
        for dtype in args.dtypes.split(","):
            r = run(folder, size, dtype, args.steps)
            r["unet_tflop_per_step"] = flops / 1e12
            r["tflops"] = flops / r["s_per_step"] / 1e12
            rows.append(r)
            print(f"{size:>5} {dtype:>5} {r['s_per_step']:>8.2f} {r['first_step_s']:>8.2f} {r['tflops']:>8.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
