"""First-block step caching: diffusers' hooks driven by lowvram (runtime/step_cache.py) and the planner's
opt-in choice (plan/step_cache.py), on tiny random-weight pipelines of the real classes."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from cli_inproc import run_cli
from tiny_pipelines import _module, build_pipeline

from lowvram.catalogue import MODELS
from lowvram.errors import UserError
from lowvram.plan import Machine, Policy, Workload, make_plan
from lowvram.plan.facts import component_facts
from lowvram.plan.step_cache import (BLOCK_LISTS, STEP_CACHE_CLASSES, _in_skipped_block, cached_call_copy_bytes,
                                     expected_skip, supports_step_cache)
from lowvram.runtime.accountant import BudgetAccountant
from lowvram.runtime.step_cache import StepCache, StepCacheConfig, cached_blocks
from lowvram.runtime.streaming import StreamingEngine

GiB = 2**30
STEPS = 4
# A threshold no relative residual change reaches on these tiny models: every step after the first is cached.
SKIP_ALL = 1e6
CARD = Machine("test card", 8 * GiB, 32 * GiB, link_bytes_per_s=12.5e9, tflops=40.0, bf16=True, fp8=True)


@pytest.fixture(scope="module", params=["flux-dev", "pixart-sigma"])
def pipe(request, tmp_path_factory):
    p = build_pipeline(request.param, str(tmp_path_factory.mktemp(request.param)))
    p.set_progress_bar_config(disable=True)
    return p


def _image(pipe, seed=0):
    # PixArt's pipeline would otherwise resize 64² to its nearest trained aspect bin (256²)
    extra = {"use_resolution_binning": False} if "PixArt" in type(pipe).__name__ else {}
    with torch.no_grad():
        return pipe(prompt="a red cube", height=64, width=64, num_inference_steps=STEPS, output_type="np",
                    generator=torch.Generator().manual_seed(seed), **extra).images


def test_threshold_zero_is_the_uncached_image_exactly(pipe):
    ref = _image(pipe)
    cache = StepCache(pipe.transformer, StepCacheConfig(0.0)).apply()
    try:
        out = _image(pipe)
    finally:
        cache.remove()
    assert np.array_equal(out, ref)
    assert cache.stats.calls == STEPS and cache.stats.skipped == 0


def test_a_high_threshold_skips_steps_and_each_image_starts_afresh(pipe):
    ref = _image(pipe)
    cache = StepCache(pipe.transformer, StepCacheConfig(SKIP_ALL)).apply()
    try:
        first = _image(pipe)
        second = _image(pipe)  # reuses nothing of the first image: same seed, same image
    finally:
        cache.remove()
    # per image: the first step computes every block (nothing cached yet), the others reuse it
    assert cache.stats.calls == 2 * STEPS
    assert cache.stats.skipped == 2 * (STEPS - 1)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, ref)  # lossy
    assert np.array_equal(_image(pipe), ref)  # removed: the model is as before


def test_composes_with_streaming_every_unit_streamed(pipe):
    """Cached steps with every unit streamed give the same image as cached steps all resident."""
    cache = StepCache(pipe.transformer, StepCacheConfig(SKIP_ALL)).apply()
    try:
        resident = _image(pipe)
        engine = StreamingEngine(pipe.transformer, "cpu", 0, BudgetAccountant(1 * GiB, torch.device("cpu"))).apply()
        try:
            streamed = _image(pipe)
        finally:
            engine.remove()
    finally:
        cache.remove()
    assert np.array_equal(streamed, resident)
    assert engine.stats.copies > 0


def test_a_cached_step_copies_only_what_runs(pipe):
    """With the step cache telling the streaming engine which units a call skips, a cached step copies only
    the units outside the skipped blocks (+ the one prefetched before the first block decided), and the
    image equals the resident cached one."""
    den = pipe.transformer
    cache = StepCache(den, StepCacheConfig(SKIP_ALL)).apply()
    try:
        resident = _image(pipe)
        engine = StreamingEngine(den, "cpu", 0, BudgetAccountant(1 * GiB, torch.device("cpu")),
                                 skip_unit=cache.skips).apply()
        cache.on_decided = engine.refetch  # as the executor wires them
        per_call = []
        before = den.register_forward_pre_hook(lambda m, a: per_call.append(-engine.stats.bytes_copied))
        after = den.register_forward_hook(lambda m, a, o: per_call.__setitem__(-1, per_call[-1] + engine.stats.bytes_copied))
        try:
            streamed = _image(pipe)
        finally:
            before.remove()
            after.remove()
            engine.remove()
    finally:
        cache.remove()
    assert np.array_equal(streamed, resident)
    skippable = {id(m) for _, b in cached_blocks(den)[1:] for m in b.modules()}
    outside = sum(u.host_bytes for u in engine.streamed if id(u.module) not in skippable)
    largest = max(u.host_bytes for u in engine.streamed)
    # step 1 computes every block; steps 2.. are cached and copy none of the skipped blocks' units but the
    # one prefetched before the first block decided (and the next image's first unit, wrapping around)
    assert per_call[0] >= engine.streamed_bytes - largest
    assert all(c <= outside + 2 * largest and c < per_call[0] for c in per_call[1:])
    # the prefetch follows the decision: the units after the skipped blocks were copied in time
    assert engine.stats.resyncs == STEPS - 1 and engine.stats.sync_loads == 0


def test_a_unet_is_refused_with_one_sentence():
    unet = _module("sd15", "unet")
    assert cached_blocks(unet) == []
    with pytest.raises(UserError, match="run without --step-cache"):
        StepCache(unet, StepCacheConfig(0.1)).apply()


@pytest.mark.parametrize("model,overrides", [("flux-dev", None), ("pixart-sigma", None),
                                             ("qwen-image", {"num_layers": 2})])
def test_the_planners_classes_are_what_diffusers_hooks(model, overrides):
    """STEP_CACHE_CLASSES names denoisers whose blocks diffusers' first-block cache registers."""
    den = _module(model, "transformer", overrides)
    assert type(den).__name__ in STEP_CACHE_CLASSES
    assert supports_step_cache(MODELS[model])
    assert len(cached_blocks(den)) >= 2


def test_config_rejects_a_negative_or_nan_threshold():
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError):
            StepCacheConfig(bad)


# ---------------------------------------------------------------- planner
def test_planner_counts_the_estimated_skips_and_says_so():
    wl = Workload(1024, 1024, 1, 28)
    plain = make_plan(MODELS["flux-dev"], wl, CARD, Policy("fast"))
    cached = make_plan(MODELS["flux-dev"], wl, CARD, Policy("fast", step_cache=0.08))
    assert plain.step_cache == 0 and cached.step_cache == 0.08
    assert cached.step_cache_skip == pytest.approx(expected_skip(0.08)) == pytest.approx(0.5)
    assert cached.seconds_per_step < plain.seconds_per_step
    assert cached.components == plain.components  # the same placements: caching is a layer over them
    assert any(d.startswith("step cache:") and "estimate" in d for d in cached.decisions)
    assert cached.lossy_reason


def test_planner_counts_only_the_copies_a_skipped_step_still_makes():
    """On a small card Flux streams. A skipped call copies only the streamed units outside the skipped blocks
    (plus one prefetched before the first block decided): the estimate never makes a step faster than those
    copies, and saves more than if every streamed unit were still copied."""
    small = replace(CARD, vram_bytes=12 * GiB, ram_bytes=64 * GiB, tflops=400.0)
    wl = Workload(1024, 1024, 1, 28)
    plain = make_plan(MODELS["flux-dev"], wl, small, Policy("fast"))
    cached = make_plan(MODELS["flux-dev"], wl, small, Policy("fast", step_cache=0.08))
    den = next(c for c in plain.components if c.role == "denoiser")
    spec = MODELS["flux-dev"].component("transformer")
    still = cached_call_copy_bytes(den, spec)
    assert den.streamed_bytes > 0 and 0 < still < 0.25 * den.streamed_bytes  # the blocks are most of the bytes
    n_streamed = len(component_facts(spec).units) - den.resident_units
    assert still >= den.streamed_bytes / n_streamed  # at least an average unit: the one prefetched before the decision
    skip = cached.step_cache_skip
    calls = den.calls_per_image
    floor = (calls * (1 - skip) * den.seconds_per_call + calls * skip * still / small.link_bytes_per_s) / wl.steps
    assert cached.seconds_per_step >= floor - 1e-6
    every_copy = (calls * skip * max(den.seconds_per_call / den.total_units, den.streamed_bytes / small.link_bytes_per_s)
                  + calls * (1 - skip) * den.seconds_per_call) / wl.steps
    assert cached.seconds_per_step < every_copy
    assert "a skipped step still copies" in cached.decisions[-1]


def test_block_lists_are_the_blocks_diffusers_caches():
    """BLOCK_LISTS (the planner's, no diffusers import) names the blocks runtime/step_cache.py hooks, in order."""
    for model, overrides in (("flux-dev", None), ("pixart-sigma", None), ("qwen-image", {"num_layers": 2})):
        den = _module(model, "transformer", overrides)
        names = [n for n, _ in cached_blocks(den)]
        lists = BLOCK_LISTS[type(den).__name__]
        assert [n.rsplit(".", 1)[0] for n in names] == [lst for lst in lists for _ in getattr(den, lst)]
        assert not _in_skipped_block(names[0] + ".attn", lists)
        assert all(_in_skipped_block(n + ".x", lists) for n in names[1:])
        assert not _in_skipped_block("norm_out", lists) and not _in_skipped_block("proj_out", lists)


def test_planner_leaves_a_unet_uncached_with_the_reason():
    p = make_plan(MODELS["sd15"], Workload(512, 512, 1, 20), CARD, Policy("fast", step_cache=0.08))
    assert p.step_cache == 0
    assert "not used" in p.decisions[-1]


def test_policy_refuses_step_cache_without_quality_fast():
    with pytest.raises(ValueError):
        Policy("balanced", step_cache=0.1)


def test_cli_plan_with_step_cache(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "plan", "flux-dev", "--gpu", "RTX 4090", "--quality", "fast",
                             "--step-cache", "0.08")
    assert code == 0, err
    assert "step cache: first-block caching at threshold 0.08" in out
    code, out, err = run_cli(monkeypatch, capsys, "plan", "flux-dev", "--gpu", "RTX 4090", "--step-cache", "0.08")
    assert code == 2 and "--quality fast" in err and "Traceback" not in err


# ---------------------------------------------------------------- through a Session and the CLI
def test_a_session_applies_the_plans_step_cache_and_reports_the_skips(tmp_path):
    from lowvram.generate.request import GenerateRequest
    from lowvram.generate.session import Session
    from lowvram.plan.step_cache import with_step_cache

    folder = str(tmp_path / "flux")
    build_pipeline("flux-dev", folder)
    machine = Machine("test", 48 * GiB, 64 * GiB, 12.5e9, 40.0, device="cpu")  # the CPU runs it

    # the planner's step-cache layer over a lossless plan: `--quality fast` on a CPU plan stores T5 in fp8,
    # which fails in T5's forward on main today (a loader/precision issue, not the step cache's)
    def planner(spec, wl, file_weights=None, quality=None):
        return with_step_cache(make_plan(spec, wl, machine, Policy("lossless"), file_weights=file_weights), spec,
                               SKIP_ALL)

    session = Session(planner)
    req = GenerateRequest(prompt="a red cube", model=folder, width=64, height=64, steps=4,
                          output=str(tmp_path / "out.png"), quiet=True)
    try:
        res = session.run(req)
        again = session.run(req)  # the model stays loaded; each image starts its cache afresh
        denoiser = session.loaded.modules["transformer"]
    finally:
        session.unload()
    assert res.plan.step_cache == SKIP_ALL
    assert (res.step_cache_calls, res.step_cache_skipped) == (4, 3)
    assert (again.step_cache_calls, again.step_cache_skipped) == (4, 3)
    assert np.array_equal(res.images[0], again.images[0])
    assert cached_blocks(denoiser)  # unloading removed the hooks: no diffusers cache hook left on a block
    assert all(not getattr(b, "_diffusers_hook", None) or not b._diffusers_hook.hooks for _, b in cached_blocks(denoiser))


def test_cli_generate_refuses_step_cache_without_quality_fast(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a cat", "--model", str(tmp_path), "--step-cache", "0.1")
    assert code == 2 and "--quality fast" in err and "Traceback" not in err
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a cat", "--model", str(tmp_path), "--quality", "fast",
                             "--step-cache", "-1")
    assert code == 2 and "not a threshold" in err
