"""Phases under a plan: each component is on the device only while it runs, as the plan says."""

from dataclasses import replace

import torch
from tiny import TINY

from lowvram.catalogue import MODELS, build_component
from lowvram.contract import ComponentPlan, Machine, Plan, Workload
from lowvram.runtime.executor import PlanExecutor
from lowvram.simulate import SimRequest
from lowvram.simulate.run import build_inputs


def _cp(name, role, placement, k=0, precision="fp16"):
    return ComponentPlan(name=name, role=role, params=0, stored_bytes=0, placement=placement, precision=precision,
                         compute_dtype="fp32", vram_bytes=0, resident_units=k)


def test_phases_follow_the_plan():
    spec, mods = _flux_tiny()
    plan = Plan(model="flux-dev", policy="lossless", fits=True, workload=Workload(128, 128),
                machine=Machine("cpu", 1 << 30, 1 << 34, 1e10, 1.0),
                components=(_cp("transformer", "denoiser", "streamed", 2), _cp("text_encoder", "text_encoder", "cpu"),
                            _cp("text_encoder_2", "text_encoder", "resident"), _cp("vae", "vae", "resident")),
                attention="sdpa", attention_chunk=0, cfg_mode="none", vae_tile=0, peak_vram_bytes=1 << 30,
                peak_ram_bytes=0, seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
    req = SimRequest(batch=1, width=128, height=128, dtype="fp32")
    calls = {}
    for name in ("text_encoder", "text_encoder_2", "transformer"):
        torch.manual_seed(1)
        calls[name] = build_inputs(mods[name], spec, spec.component(name), req)
    with torch.no_grad():
        ref = calls["transformer"][0](**calls["transformer"][1])[0].clone()
    ex = PlanExecutor(plan, mods, "cpu").apply()
    with torch.no_grad():
        for name in ("text_encoder", "text_encoder_2", "transformer", "transformer"):
            fn, kw = calls[name]
            out = fn(**kw)
        assert torch.equal(out[0], ref)
        mods["vae"].decode(torch.randn(1, mods["vae"].config.latent_channels, 32, 32))
    assert ex.phases == ["text_encoder", "text_encoder_2", "transformer", "vae"]
    assert ex.accountant.peak <= ex.accountant.budget
    ex.remove()


def _flux_tiny():
    spec = MODELS["flux-dev"]
    mods = {}
    for c in spec.components:
        torch.manual_seed(0)
        cfg = TINY.get(c.config) or (TINY["sd-vae"] if c.role == "vae" else TINY["clip-vit-large-patch14"])
        mods[c.name] = build_component(c, "cpu", dtype=torch.float32, config_overrides=cfg)
    return spec, mods


def _nbytes(m):
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def test_earlier_phases_stay_while_they_fit_and_leave_when_not():
    spec, mods = _flux_tiny()
    size = {n: _nbytes(m) for n, m in mods.items()}
    comps = tuple(replace(_cp(n, spec.component(n).role, "resident"), vram_bytes=size[n]) for n in mods)
    req = SimRequest(batch=1, width=128, height=128, dtype="fp32")
    calls = {n: build_inputs(mods[n], spec, spec.component(n), req) for n in ("text_encoder_2", "transformer")}
    used = ("text_encoder_2", "transformer")
    for budget, kept in ((sum(size[n] for n in used), True), (max(size[n] for n in used), False)):
        plan = Plan(model="flux-dev", policy="lossless", fits=True, workload=Workload(128, 128),
                    machine=Machine("cpu", 1 << 30, 1 << 34, 1e10, 1.0), components=comps, attention="sdpa",
                    attention_chunk=0, cfg_mode="none", vae_tile=0, peak_vram_bytes=budget, peak_ram_bytes=0,
                    seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
        ex = PlanExecutor(plan, mods, "cpu").apply()
        with torch.no_grad():
            for _ in range(2):  # two images
                for name in ("text_encoder_2", "transformer"):
                    fn, kw = calls[name]
                    fn(**kw)
        assert ex.accountant.peak <= ex.accountant.budget
        if kept:  # room for both: each was placed once, and both are still there
            assert ex.phases == ["text_encoder_2", "transformer"] and set(ex.engines) == {"text_encoder_2", "transformer"}
        else:  # room for one at a time: each image evicts and places again
            assert ex.phases == ["text_encoder_2", "transformer"] * 2 and list(ex.engines) == ["transformer"]
        ex.remove()
        assert all(p.device.type == "cpu" for m in mods.values() for p in m.parameters())


def test_vae_decodes_at_the_plans_tile_size_and_retries_smaller_on_oom():
    """The plan's vae_tile reaches the VAE the pipeline calls, and an out-of-memory decode is retried in
    smaller tiles (re-plan recorded) instead of losing the image."""
    spec, mods = _flux_tiny()
    vae = mods["vae"]
    lat = torch.randn(1, vae.config.latent_channels, 128, 128)  # a 256-px image (the tiny VAE scales by 2)
    with torch.no_grad():
        ref = vae.decode(lat, return_dict=False)[0]
    calls = {"n": 0}
    original = vae.decode

    def flaky(z, return_dict=True):  # the first attempt (in 256-px tiles) runs out of memory
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(z, return_dict=return_dict)

    vae.decode = flaky
    plan = Plan(model="flux-dev", policy="lossless", fits=True, workload=Workload(128, 128),
                machine=Machine("cpu", 1 << 30, 1 << 34, 1e10, 1.0), components=(_cp("vae", "vae", "resident"),),
                attention="sdpa", attention_chunk=0, cfg_mode="none", vae_tile=256, peak_vram_bytes=1 << 30,
                peak_ram_bytes=0, seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
    ex = PlanExecutor(plan, {"vae": vae}, "cpu").apply()
    assert vae.use_tiling and vae.tile_sample_min_size == 256
    out = vae.decode(lat, return_dict=False)[0]
    assert out.shape == ref.shape and vae.tile_sample_min_size == 128
    assert ex.replans == ["vae: out of memory decoding in 256-px tiles; decoded again in 128-px tiles"]
    ex.remove()
    assert "decode" not in vae.__dict__  # the pipeline's VAE is left as it was


def test_resident_components_run_without_hooks_when_nothing_can_be_evicted(monkeypatch):
    """Issue #13 item 1: when every component is resident and all fit together, a placed component runs
    with no hook at all (its calls cost what plain diffusers' cost), the accountant is charged once per
    placement, and the output is the plain run's. With a budget that forces evictions, hooks stay."""
    from lowvram.runtime.accountant import BudgetAccountant

    spec, all_mods = _flux_tiny()
    used = ("text_encoder_2", "transformer")
    mods = {n: all_mods[n] for n in used}
    size = {n: _nbytes(m) for n, m in mods.items()}
    comps = tuple(replace(_cp(n, spec.component(n).role, "resident"), vram_bytes=size[n]) for n in used)
    req = SimRequest(batch=1, width=128, height=128, dtype="fp32")
    calls = {n: build_inputs(mods[n], spec, spec.component(n), req) for n in used}
    with torch.no_grad():
        ref = calls["transformer"][0](**calls["transformer"][1])[0].clone()
    reserves = []
    original = BudgetAccountant.reserve
    monkeypatch.setattr(BudgetAccountant, "reserve", lambda self, n, owner: (reserves.append(owner), original(self, n, owner)))
    for budget, hookless in ((sum(size.values()), True), (max(size.values()), False)):
        reserves.clear()
        plan = Plan(model="flux-dev", policy="lossless", fits=True, workload=Workload(128, 128),
                    machine=Machine("cpu", 1 << 30, 1 << 34, 1e10, 1.0), components=comps, attention="sdpa",
                    attention_chunk=0, cfg_mode="none", vae_tile=0, peak_vram_bytes=budget, peak_ram_bytes=0,
                    seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
        ex = PlanExecutor(plan, mods, "cpu").apply()
        assert all(len(m._forward_pre_hooks) == 1 for m in mods.values())  # before placement: the activation hook
        with torch.no_grad():
            for _ in range(2):
                for name in used:
                    fn, kw = calls[name]
                    out = fn(**kw)
        assert torch.equal(out[0], ref)
        if hookless:  # placed once each, charged once each, and no hook left on either
            assert ex.phases == list(used) and reserves == list(used)
            assert all(not m._forward_pre_hooks and not m._forward_hooks for m in mods.values())
        else:  # evicted and placed again each image: the hook that places them must stay
            assert ex.phases == list(used) * 2 and reserves == list(used) * 2
            assert len(mods["text_encoder_2"]._forward_pre_hooks) == 1
        ex.remove()
        assert all(not m._forward_pre_hooks for m in mods.values())
        assert all(p.device.type == "cpu" for m in mods.values() for p in m.parameters())
