"""CPU seconds per image of `lowvram generate` for every catalogue family, on the tests' tiny pipelines.

The tiny pipelines are the real diffusers classes and folder layouts with scaled-down sizes (the ones
tests/test_generate.py runs), so the figure is lowvram's whole path on a CPU — inspect, plan, load under
the plan, denoise, decode, write the PNG — not a model's speed. Each family runs in this one process;
the first run of a family includes simulating its real-size components for the plan (cached after).

    python bench/tiny_generate.py [--steps 4] [--size 128] [--models sd15,sdxl,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

from lowvram.generate.run import GenerateRequest, generate  # noqa: E402
from lowvram.plan import Policy, make_plan  # noqa: E402
from lowvram.plan.machine import resolve_machine  # noqa: E402
from tiny_pipelines import build_if_cascade, build_pipeline  # noqa: E402

FAMILIES = ["sd15", "sd21", "sdxl", "sd3-medium", "flux-dev", "flux-schnell", "pixart-sigma", "chroma",
            "hidream-i1", "qwen-image", "deepfloyd-if"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--models", default=",".join(FAMILIES))
    ap.add_argument("--json")
    args = ap.parse_args()
    machine = resolve_machine(None, "24GB", "16GB")
    rows = []
    work = tempfile.mkdtemp(prefix="lowvram-tiny-")
    for name in args.models.split(","):
        folder = os.path.join(work, name)
        build_if_cascade(folder) if name == "deepfloyd-if" else build_pipeline(name, folder)
        times = []
        for k in range(2):  # the first includes the plan's simulations; the second is what a user sees next
            req = GenerateRequest("a red fox in the snow", folder, width=args.size, height=args.size, steps=args.steps,
                                  seed=k, quiet=True, output=os.path.join(work, f"{name}-{k}.png"))
            t0 = time.perf_counter()
            res = generate(req, lambda s, wl, fw=None: make_plan(s, wl, machine, Policy("lossless"), file_weights=fw))
            times.append((time.perf_counter() - t0, res.load_seconds, res.run_seconds))
        rows.append({"model": name, "first_s": times[0][0], "second_s": times[1][0], "load_s": times[1][1],
                     "run_s": times[1][2]})
        print(rows[-1], flush=True)
    import torch

    print(f"tiny pipelines, {args.size}x{args.size}, {args.steps} steps, CPU ({os.cpu_count()} cores), torch "
          f"{torch.__version__}, date {time.strftime('%Y-%m-%d')}")
    print("| model | first image (incl. plan simulations) s | next image s | of which loading s | pipeline call s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['first_s']:.1f} | {r['second_s']:.1f} | {r['load_s']:.2f} | {r['run_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
