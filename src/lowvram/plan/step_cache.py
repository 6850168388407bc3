"""The planner's step-caching choice: first-block caching of the denoiser, opt-in, under `--quality fast`.

A plan with step caching runs the first block every step and the other blocks only on the steps whose
first-block residual moved more than the threshold (runtime/step_cache.py, diffusers' hooks). How many
steps that skips depends on the model, the prompt and the sampler: the planner counts an *estimate*,
says so in the plan, and the runtime reports the real count.
A skipped step still calls every block (diffusers' hook returns the block's inputs), so a streamed unit
is still copied on a skipped step: the skip saves compute, not copies. The estimate counts that.
"""

from __future__ import annotations

from dataclasses import replace

from ..catalogue import ModelSpec
from ..contract import Plan

# Denoisers whose blocks diffusers' first-block cache can hook (diffusers/hooks/_helpers.py registers their
# block classes; checked against diffusers in tests/test_step_cache.py). Not: UNets (no flat list of
# transformer blocks; skip connections leave no single residual), SD3 (its last JointTransformerBlock
# returns no encoder states, which the hook subtracts from: TypeError in diffusers 0.42), Chroma and
# HiDream (block classes diffusers does not register).
STEP_CACHE_CLASSES = frozenset({"FluxTransformer2DModel", "PixArtTransformer2DModel", "QwenImageTransformer2DModel"})
# The estimate of the fraction of steps skipped: ParaAttention's default threshold for FLUX.1-dev (0.08)
# gives "a 2x speedup ... with very good quality" (diffusers docs, optimization/para_attn: 28 steps at
# 1024² on an L20), about half the steps skipped. Scaled linearly with the threshold, capped: the first
# steps and every step where the image still changes fast are always computed.
REFERENCE_THRESHOLD = 0.08
REFERENCE_SKIP = 0.5
MAX_SKIP = 0.75


def expected_skip(threshold: float) -> float:
    """The fraction of denoiser calls the planner expects a threshold to skip (an estimate, see above)."""
    return min(MAX_SKIP, REFERENCE_SKIP * threshold / REFERENCE_THRESHOLD) if threshold > 0 else 0.0


def supports_step_cache(model: ModelSpec) -> bool:
    den = next((c for c in model.components if c.role == "denoiser"), None)
    return den is not None and den.class_name in STEP_CACHE_CLASSES


def with_step_cache(plan: Plan, model: ModelSpec, threshold: float) -> Plan:
    """`plan` with the denoiser's step caching at `threshold` and its estimated time; unchanged (with the
    reason in its decisions) where the denoiser cannot be cached or nothing fits."""
    if threshold <= 0 or not plan.fits:
        return plan
    den = next((c for c in plan.components if c.role == "denoiser"), None)
    if den is None or not supports_step_cache(model):
        name = den.name if den is not None else "the model"
        return replace(plan, decisions=plan.decisions + (
            f"step cache: not used: {model.name}'s {name} has no transformer blocks diffusers' first-block cache "
            f"supports (supported: {', '.join(sorted(STEP_CACHE_CLASSES))})",))
    skip = expected_skip(threshold)
    units = max(den.total_units, 1)
    # a skipped call: the first block's compute (~1/units of the call), and every streamed copy still made
    copy_s = den.streamed_bytes / plan.machine.link_bytes_per_s if den.streamed_bytes else 0.0
    skipped_call = max(den.seconds_per_call / units, copy_s)
    saved = den.calls_per_image * skip * max(0.0, den.seconds_per_call - skipped_call)
    steps = max(plan.workload.steps, 1)
    line = (f"step cache: first-block caching at threshold {threshold:g} (lossy, asked for); an estimated "
            f"{skip:.0%} of {den.name} calls skipped (ParaAttention's Flux figure scaled to the threshold, "
            f"not measured for this model), {saved / steps:.3f} s/step saved"
            + ("; streamed units are still copied on a skipped step" if copy_s else ""))
    return replace(plan, step_cache=threshold, step_cache_skip=skip,
                   seconds_per_step=max(0.0, plan.seconds_per_step - saved / steps),
                   seconds_per_image=max(0.0, plan.seconds_per_image - saved),
                   decisions=plan.decisions + (line,),
                   lossy_reason=plan.lossy_reason or f"step caching at threshold {threshold:g} (asked for)")
