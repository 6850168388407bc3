"""What the published ControlNets cost, as the planner sees them: parameters, the simulated activation
peak and FLOPs of their call, and of the step they make with their denoiser (docs/benchmarks.md).

    python bench/controlnet_sim.py

Each model at its default size, with the batch its denoiser runs (2 under classifier-free guidance).
Fake tensors only: no weights, no GPU; a cold cache takes about a minute on 2 cores.
"""

from __future__ import annotations

from dataclasses import replace

from lowvram.catalogue import MODELS
from lowvram.catalogue.controlnet import DEFAULTS
from lowvram.simulate import SimRequest, simulate_component

MiB = 2**20


def main() -> None:
    for name in ("sd15", "sdxl", "flux-dev"):
        spec = MODELS[name]
        req = SimRequest(batch=2 if spec.uses_cfg else 1, width=spec.width, height=spec.height)
        den = simulate_component(spec, spec.by_role("denoiser")[0], req)
        cn = simulate_component(spec, DEFAULTS[name], req)
        step = simulate_component(spec, DEFAULTS[name], replace(req, op="step"))
        print(f"{name} {spec.width}² batch {req.batch} ({DEFAULTS[name].title}): ControlNet {cn.params:,} params, "
              f"call {cn.activation_peak_bytes / MiB:.1f} MiB, {cn.flops / 1e12:.2f} TFLOP | denoiser "
              f"{den.activation_peak_bytes / MiB:.1f} MiB, {den.flops / 1e12:.2f} TFLOP | step "
              f"{step.activation_peak_bytes / MiB:.1f} MiB, {step.flops / 1e12:.2f} TFLOP")


if __name__ == "__main__":
    main()
