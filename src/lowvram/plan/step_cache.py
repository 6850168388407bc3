"""The planner's step-caching choice: first-block caching of the denoiser, opt-in, under `--quality fast`.

A plan with step caching runs the first block every step and the other blocks only on the steps whose
first-block residual moved more than the threshold (runtime/step_cache.py, diffusers' hooks). How many
steps that skips depends on the model, the prompt and the sampler: the planner counts an *estimate*,
says so in the plan, and the runtime reports the real count.
On a skipped step the streaming engine copies only the streamed units outside the skipped blocks (the
embedders, the first block, the output layers) and one unit more, prefetched before the first block had
decided (runtime/streaming.py `skip_unit`); the estimate counts those copies against the saved compute.
"""

from __future__ import annotations

from dataclasses import replace

from ..catalogue import ComponentSpec, ModelSpec
from ..contract import ComponentPlan, Plan
from .facts import component_facts

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
# The denoisers' lists of transformer blocks, in the order diffusers' first-block cache hooks them (its
# `_ALL_TRANSFORMER_BLOCK_IDENTIFIERS` in named_children order; checked in tests/test_step_cache.py): the first
# block of the first list decides, every other block of these lists is skipped on a cached step.
BLOCK_LISTS = {
    "FluxTransformer2DModel": ("transformer_blocks", "single_transformer_blocks"),
    "PixArtTransformer2DModel": ("transformer_blocks",),
    "QwenImageTransformer2DModel": ("transformer_blocks",),
}
REFERENCE_THRESHOLD = 0.08
REFERENCE_SKIP = 0.5
MAX_SKIP = 0.75


def expected_skip(threshold: float) -> float:
    """The fraction of denoiser calls the planner expects a threshold to skip (an estimate, see above)."""
    return min(MAX_SKIP, REFERENCE_SKIP * threshold / REFERENCE_THRESHOLD) if threshold > 0 else 0.0


def _in_skipped_block(unit: str, lists: tuple[str, ...]) -> bool:
    for j, name in enumerate(lists):
        if unit.startswith(name + "."):
            index = unit[len(name) + 1:].split(".", 1)[0]
            return not (j == 0 and index == "0")
    return False


def cached_call_copy_bytes(den: ComponentPlan, spec: ComponentSpec) -> int:
    """Bytes a skipped (cached) denoiser call still copies to the device: its streamed units outside the
    skipped blocks, and one average streamed unit (the block after the first, prefetched while the first
    block still ran, before it decided)."""
    if not den.streamed_bytes:
        return 0
    facts = component_facts(spec)
    resident = den.resident_set()
    streamed = [i for i in range(len(facts.units)) if i not in resident]
    if len(facts.units) != den.total_units or not streamed:
        return den.streamed_bytes  # units not known as the plan counted them: assume every one is copied
    sizes = facts.unit_bytes("bf16")  # the shares are the same at any precision
    lists = BLOCK_LISTS.get(spec.class_name, ())
    total = sum(sizes[i] for i in streamed)
    runs = sum(sizes[i] for i in streamed if not _in_skipped_block(facts.units[i].name, lists))
    return min(den.streamed_bytes, int(den.streamed_bytes * runs / max(total, 1) + den.streamed_bytes / len(streamed)))


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
    spec = next(c for c in model.components if c.name == den.name)
    # a skipped call: the first block's compute (~1/units of the call), or the copies it still makes
    copy_s = cached_call_copy_bytes(den, spec) / plan.machine.link_bytes_per_s
    skipped_call = max(den.seconds_per_call / units, copy_s)
    saved = den.calls_per_image * skip * max(0.0, den.seconds_per_call - skipped_call)
    steps = max(plan.workload.steps, 1)
    line = (f"step cache: first-block caching at threshold {threshold:g} (lossy, asked for); an estimated "
            f"{skip:.0%} of {den.name} calls skipped (ParaAttention's Flux figure scaled to the threshold, "
            f"not measured for this model), {saved / steps:.3f} s/step saved"
            + (f"; a skipped step still copies {copy_s * 1000:.0f} ms of streamed units (those outside the "
               f"skipped blocks; {den.streamed_bytes / plan.machine.link_bytes_per_s * 1000:.0f} ms a computed step)"
               if copy_s else ""))
    return replace(plan, step_cache=threshold, step_cache_skip=skip,
                   seconds_per_step=max(0.0, plan.seconds_per_step - saved / steps),
                   seconds_per_image=max(0.0, plan.seconds_per_image - saved),
                   decisions=plan.decisions + (line,),
                   lossy_reason=plan.lossy_reason or f"step caching at threshold {threshold:g} (asked for)")
