"""End-to-end `generate` at several VRAM budgets: measured time and peak VRAM next to the plan's.

On a CUDA machine it writes a real-size SDXL pipeline with random weights (fp16 safetensors, tiny
tokenizers; built on the GPU by bench/random_models.py) as a diffusers folder, then runs lowvram's
`generate` on it unconstrained and under each budget (the budget is enforced the way `--vram` does:
torch.cuda.set_per_process_memory_fraction). The plan is made for this card with the host->device
bandwidth measured here. Random weights with the real architecture give real memory and speed figures;
the images are noise. Each row: predicted and measured seconds for the pipeline call (loading apart),
predicted and measured peak VRAM, and the largest pixel difference from the unconstrained image.

    python bench/gpu_generate.py [--model sdxl] [--budgets 0,8,6,4] [--steps 20] [--json out.json]   # CUDA
    python bench/gpu_generate.py --tiny                                                              # CPU dry run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

from lowvram.catalogue import MODELS  # noqa: E402
from lowvram.generate.run import GenerateRequest, generate  # noqa: E402
from lowvram.plan import Policy, make_plan  # noqa: E402
from lowvram.plan.machine import resolve_machine  # noqa: E402
from lowvram.units import format_bytes  # noqa: E402
from random_models import build_random, pinned_bandwidth  # noqa: E402

GiB = 2**30


def write_random_pipeline(model: str, folder: str, dtype: torch.dtype) -> None:
    """A real-size pipeline of CLIP-tokenised model `model` (sd15, sdxl) saved as a diffusers folder."""
    import diffusers
    from tiny_pipelines import clip_tokenizer

    spec = MODELS[model]
    parts = {c.name: build_random(c, "cuda", dtype) for c in spec.components}
    for c in spec.components:
        if c.role == "text_encoder":
            tok = "tokenizer" + c.name[len("text_encoder"):]
            parts[tok] = clip_tokenizer(os.path.join(folder, "_tok", tok))
    if model in ("sd15", "sd21"):
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    parts["scheduler"] = getattr(diffusers, spec.scheduler)()
    pipe = getattr(diffusers, spec.pipeline)(**parts)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe, parts
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="dry run on CPU with the tests' tiny pipeline")
    ap.add_argument("--model", default="sdxl")
    ap.add_argument("--budgets", default="0,8,6,4", help="GB; 0 = unconstrained (the whole card)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    spec = MODELS[args.model]
    work = tempfile.mkdtemp(prefix="lowvram-bench-")
    folder = os.path.join(work, args.model)
    t0 = time.perf_counter()
    if cuda:
        write_random_pipeline(args.model, folder, torch.float16)
        link = pinned_bandwidth()
        size = None  # the catalogue's default resolution
    else:
        from tiny_pipelines import build_pipeline

        build_pipeline(args.model, folder)
        link, size = 25e9, 128
    written = time.perf_counter() - t0
    rows, ref = [], None
    for b in [int(x) for x in args.budgets.split(",")]:
        vram = f"{b}GB" if b else (None if cuda else "24GB")
        machine = resolve_machine(None, vram, None, link_gbps=link / 1e9)
        out = os.path.join(work, f"b{b}.png")
        req = GenerateRequest("a lighthouse on a cliff at dusk", folder, width=size, height=size, steps=args.steps,
                              seed=1, quiet=True, output=out)
        try:
            res = generate(req, lambda s, wl, fw=None: make_plan(s, wl, machine, Policy("lossless"), file_weights=fw))
        except Exception as e:  # one budget failing must not cost the others (device time is scarce)
            rows.append({"budget_GB": b, "error": f"{type(e).__name__}: {e}"[:200]})
            print(rows[-1], flush=True)
            continue
        img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out)).astype(int)
        ref = img if ref is None else ref
        p = res.plan
        placement = ", ".join(f"{c.name} {c.placement}" + (f" {c.resident_units}/{c.total_units}" if c.placement == "streamed" else "")
                              + ("" if c.precision in ("bf16", "fp16", "fp32") else f" {c.precision}") for c in p.components)
        rows.append({"budget_GB": b, "machine": p.machine.name, "predicted_s": p.seconds_per_image, "measured_s": res.run_seconds,
                     "load_s": res.load_seconds, "predicted_peak_vram": p.peak_vram_bytes, "measured_peak_vram": res.peak_vram_bytes,
                     "peak_ram": res.peak_ram_bytes, "vae_tile": p.vae_tile, "placement": placement,
                     "max_pixel_diff": int(np.abs(img - ref).max()), "replans": res.replans})
        print(rows[-1], flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows}, f, indent=2)
    card = torch.cuda.get_device_name(0) if cuda else "CPU (tiny pipeline, dry run)"
    print(f"{spec.name} {args.steps} steps at {size or spec.width}px, random weights; device: {card}; "
          f"pinned host->device {link / 1e9:.1f} GB/s; folder written in {written:.0f} s; date {time.strftime('%Y-%m-%d')}")
    print("| budget | plan | predicted s | measured s (+ load) | predicted peak VRAM | measured peak VRAM | max pixel diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['budget_GB'] or 'whole card'} GB | {r['error']} | | | | | |")
            continue
        print(f"| {r['budget_GB'] or 'whole card'} {'GB' if r['budget_GB'] else ''} | {r['placement']}"
              f"{', VAE tiles ' + str(r['vae_tile']) if r['vae_tile'] else ''} | {r['predicted_s']:.2f} | "
              f"{r['measured_s']:.2f} (+ {r['load_s']:.1f}) | {format_bytes(r['predicted_peak_vram'])} | "
              f"{format_bytes(r['measured_peak_vram'])} | {r['max_pixel_diff']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "model": spec.name, "steps": args.steps, "link_bytes_per_s": link, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
