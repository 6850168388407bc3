"""First-block step caching on CPU: speed-up and the image's deviation from the uncached image.

A real-architecture transformer at a small size: PixArt-Σ (its 600 M-parameter DiT with the catalogue's
config, 28 BasicTransformerBlocks — a block class diffusers' first-block cache supports; SD1.5's UNet is
not one, runtime/step_cache.py) with random N(0, 0.02) weights, the real SD VAE config for decoding, and
random prompt embeddings instead of T5-XXL (4.7 B parameters: too big for this machine, and not what is
measured). The same seed and inputs run uncached, then at each threshold (runtime/step_cache.py, the
path `--step-cache` takes); each run is timed whole (denoising + decode), the denoiser calls skipped are
counted, and the image is compared with the uncached one (max abs difference in [0, 1], PSNR in dB).
Random weights: how many steps a trained model skips at a threshold differs; the mechanism and its cost
are what this measures.

    python bench/step_cache.py [--size 256] [--steps 20] [--thresholds 0,0.05,0.1,0.2 | auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from real_sd15 import random_component  # noqa: E402

PROMPT_TOKENS = 120  # PixArt-Σ's pipelines pad T5 prompts to 300 tokens; fewer keep the CPU run short
T5_WIDTH = 4096  # T5-XXL's hidden size, what the DiT's caption projection reads


def build_pipe():
    import diffusers

    transformer = random_component("pixart-sigma", "transformer", dtype=torch.float32, seed=1)
    vae = random_component("pixart-sigma", "vae", dtype=torch.float32, seed=2)
    pipe = diffusers.PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                         scheduler=diffusers.DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_timer(pipe, cache=None) -> tuple[list, list]:
    """Seconds of each denoiser call, split into computed and skipped calls (by the cache's own count): their
    ratio is the speed-up a skipped step gives, measured in the same run (a loaded machine slows both)."""
    computed, skipped, t = [], [], {}

    def pre(m, a):
        t["t0"] = time.perf_counter()

    def post(m, a, out):
        dt = time.perf_counter() - t["t0"]
        # the StepCache's hooks were registered first: its post-hook has run, its flag holds this call's answer
        (computed if (cache is None or cache._tail_ran) else skipped).append(dt)

    hs = [pipe.transformer.register_forward_pre_hook(pre), pipe.transformer.register_forward_hook(post)]
    return computed, skipped, hs


def run(pipe, size: int, steps: int) -> tuple[np.ndarray, float]:
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, PROMPT_TOKENS, T5_WIDTH, generator=g)
    mask = torch.ones(1, PROMPT_TOKENS, dtype=torch.long)
    t0 = time.perf_counter()
    with torch.no_grad():
        img = pipe(prompt=None, negative_prompt=None, prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=embeds * 0,
                   negative_prompt_attention_mask=mask, width=size, height=size, num_inference_steps=steps,
                   guidance_scale=4.5, generator=torch.Generator().manual_seed(0), output_type="np",
                   use_resolution_binning=False).images
    return img, time.perf_counter() - t0


def first_block_changes(pipe) -> tuple[list[float], callable]:
    """Record, per denoiser call, what the cache compares with its threshold: the relative mean change of
    the first block's residual since the previous call (diffusers' FBCHeadBlockHook._should_compute_remaining_blocks)."""
    block = pipe.transformer.transformer_blocks[0]
    changes, prev = [], {}

    def hook(module, args, kwargs, output):
        x = kwargs.get("hidden_states", args[0] if args else None)
        r = (output[0] if isinstance(output, tuple) else output) - x
        if "r" in prev:
            changes.append(float((r - prev["r"]).abs().mean() / prev["r"].abs().mean()))
        prev["r"] = r

    return changes, block.register_forward_hook(hook, with_kwargs=True)


def _s(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    from lowvram.runtime.step_cache import StepCache, StepCacheConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--thresholds", default="auto", help="comma-separated, or auto: 0 and the 30th and 70th "
                    "percentiles of the uncached run's first-block changes")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = build_pipe()
    run(pipe, 64, 1)  # warm-up: first-call allocations and lazy imports out of the timings
    changes, handle = first_block_changes(pipe)
    full_calls, _, hs = call_timer(pipe)
    ref, base_s = run(pipe, args.size, args.steps)
    for h in [handle, *hs]:
        h.remove()
    if args.thresholds == "auto":  # between the changes this model shows: some steps cached, not all
        qs = sorted(changes)
        args.thresholds = ",".join(f"{qs[int(q * (len(qs) - 1))]:.3g}" for q in (0.3, 0.7)) if qs else "0"
        args.thresholds = "0," + args.thresholds
    rows = [{"threshold": None, "seconds": base_s, "speedup": 1.0, "calls": args.steps, "skipped": 0,
             "max_abs_diff": 0.0, "psnr_db": math.inf, "computed_call_s": sum(full_calls) / len(full_calls),
             "skipped_call_s": None}]
    for th in (float(t) for t in args.thresholds.split(",")):
        cache = StepCache(pipe.transformer, StepCacheConfig(th)).apply()
        computed, skipped, hs = call_timer(pipe, cache)
        try:
            img, secs = run(pipe, args.size, args.steps)
        finally:
            for h in hs:
                h.remove()
            cache.remove()
        rows.append({"threshold": th, "seconds": secs, "speedup": base_s / secs, "calls": cache.stats.calls,
                     "skipped": cache.stats.skipped, "max_abs_diff": float(np.abs(img - ref).max()),
                     "psnr_db": psnr(img, ref), "computed_call_s": sum(computed) / len(computed) if computed else None,
                     "skipped_call_s": sum(skipped) / len(skipped) if skipped else None})
    print(f"PixArt-Σ DiT (real architecture, random weights), {args.size}² , {args.steps} steps, CFG batch 2, CPU fp32, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    print("first-block residual change per step, uncached: " + " ".join(f"{c:.3f}" for c in changes))
    print(f"{'threshold':>10} {'seconds':>8} {'speed-up':>8} {'skipped':>9} {'max|diff|':>10} {'PSNR dB':>8} "
          f"{'computed call s':>15} {'skipped call s':>14}")
    for r in rows:
        th = "uncached" if r["threshold"] is None else f"{r['threshold']:g}"
        print(f"{th:>10} {r['seconds']:8.1f} {r['speedup']:7.2f}x {r['skipped']:>4}/{r['calls']:<4} "
              f"{r['max_abs_diff']:10.4f} {r['psnr_db']:8.1f} {_s(r['computed_call_s']):>15} {_s(r['skipped_call_s']):>14}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": "pixart-sigma transformer (random weights)", "size": args.size, "steps": args.steps,
                       "torch": torch.__version__, "first_block_changes": changes, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
