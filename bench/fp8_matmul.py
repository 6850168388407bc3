"""fp8 matmuls on CPU: how far a tiny model's image moves from the bf16 path, per way of running fp8 weights.

The tiny random Flux pipeline of the tests (tests/fixtures/tiny_pipelines.py: the real classes, tiny
sizes), in bf16, generated four ways from the same seed: bf16 weights (the reference); fp8 weights
dequantised per layer (runtime/precision.py, what cards without fp8 tensor cores run); fp8 weights with
fp8 matmuls, tensor-wise and row-wise activation scales (runtime/fp8_matmul.py, torch._scaled_mm — it
runs on this CPU build of torch; its speed needs a GPU with fp8 tensor cores). Printed: max abs
difference of the image (values in [0, 1]) and PSNR against the bf16 image, and the denoiser output's
relative error on one call.

    python bench/fp8_matmul.py [--steps 4] [--size 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tiny_pipelines import build_pipeline  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    from lowvram.runtime.fp8_matmul import Fp8MatmulConfig, apply_fp8_matmul
    from lowvram.runtime.precision import PrecisionConfig, apply_weight_precision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    dtype = torch.bfloat16
    with tempfile.TemporaryDirectory() as d:
        pipe = build_pipeline("flux-dev", d).to(dtype)
    pipe.set_progress_bar_config(disable=True)
    original = pipe.transformer

    captured = []

    def image():
        captured.clear()
        h = pipe.transformer.register_forward_hook(lambda m, a, out: captured.append(out[0].float().clone()))
        try:
            with torch.no_grad():
                return pipe(prompt="a red cube", height=args.size, width=args.size, num_inference_steps=args.steps,
                            output_type="np", generator=torch.Generator().manual_seed(0)).images
        finally:
            h.remove()

    ref = image()
    ref_out = captured[0]
    rows = []
    for name, mode in (("fp8 dequantised per layer", None), ("fp8 matmul, tensor-wise", "fp8_tensorwise"),
                       ("fp8 matmul, row-wise", "fp8_rowwise")):
        pipe.transformer = copy.deepcopy(original)
        n = apply_weight_precision(pipe.transformer, PrecisionConfig("fp8", dtype))
        if mode:
            apply_fp8_matmul(pipe.transformer, Fp8MatmulConfig(mode, dtype))
        img = image()
        first = captured[0]
        rows.append({"path": name, "linears": n, "max_abs_diff": float(np.abs(img - ref).max()),
                     "psnr_db": psnr(img, ref),
                     "first_call_rel_err": float((first - ref_out).norm() / ref_out.norm())})
    pipe.transformer = original
    print(f"tiny Flux pipeline (random weights), {args.size}², {args.steps} steps, bf16 on CPU, torch {torch.__version__}; "
          "against the bf16-weights image")
    print(f"{'path':<28} {'Linears':>7} {'max|diff|':>10} {'PSNR dB':>8} {'denoiser rel. err':>18}")
    for r in rows:
        print(f"{r['path']:<28} {r['linears']:>7} {r['max_abs_diff']:10.4f} {r['psnr_db']:8.1f} "
              f"{r['first_call_rel_err']:18.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": "tiny flux-dev pipeline", "size": args.size, "steps": args.steps, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
