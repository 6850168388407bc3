"""The Session: one loaded model kept between requests, re-planned without reloading, unloaded completely."""

import gc

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import save_file
from tiny_pipelines import build_pipeline, catalogue_sized

from lowvram.errors import UserError
from lowvram.generate.request import GenerateRequest
from lowvram.generate.session import Session, planner_for
from lowvram.plan import Machine

GiB = 2**30


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("session-pipelines")
    out = {}
    for m in ("sd15", "sdxl"):
        build_pipeline(m, str(root / m))
        out[m] = str(root / m)
    return out


def _session(vram_gb=48):
    # planned at the catalogue's real sizes, so a 1 GB budget streams the tiny models' components
    return Session(catalogue_sized(planner_for(Machine("test", vram_gb * GiB, 64 * GiB, 12.5e9, 40.0, device="cpu"))))


def _req(folder, **kw):
    kw.setdefault("width", 64)
    kw.setdefault("height", 64)
    kw.setdefault("steps", 2)
    kw.setdefault("output", None)
    kw.setdefault("quiet", True)
    return GenerateRequest(prompt=kw.pop("prompt", "a red cat"), model=folder, **kw)


def test_second_request_reuses_the_loaded_model_and_matches_a_fresh_run(folders):
    s = _session()
    try:
        first = s.run(_req(folders["sd15"], seed=3))
        modules = s.loaded.modules
        second = s.run(_req(folders["sd15"], seed=3))
        assert not first.reused and second.reused
        assert s.loaded.modules is modules  # no weight was read again
        np.testing.assert_array_equal(first.images[0], second.images[0])
        other_size = s.run(_req(folders["sd15"], seed=3, width=96))  # re-planned, not reloaded
        assert other_size.reused and other_size.images[0].shape[:2] == (64, 96)
    finally:
        s.unload()
    fresh = _session()
    try:
        again = fresh.run(_req(folders["sd15"], seed=3))
    finally:
        fresh.unload()
    np.testing.assert_array_equal(first.images[0], again.images[0])


def test_a_lora_change_swaps_hooks_without_reloading(folders, tmp_path):
    g = torch.Generator().manual_seed(0)
    blk = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    lora = str(tmp_path / "style.safetensors")
    save_file({f"{blk}.lora_down.weight": torch.randn(4, 32, generator=g) * 4,
               f"{blk}.lora_up.weight": torch.randn(32, 4, generator=g) * 4, f"{blk}.alpha": torch.tensor(4.0)}, lora)
    s = _session()
    try:
        plain = s.run(_req(folders["sd15"], seed=1))
        modules = s.loaded.modules
        styled = s.run(_req(folders["sd15"], seed=1, loras=[(lora, 1.0)]))
        assert styled.reused and s.loaded.modules is modules and len(s.loaded.lora_hooks) == 1
        assert not np.array_equal(plain.images[0], styled.images[0])
        back = s.run(_req(folders["sd15"], seed=1))
        assert s.loaded.lora_hooks == []
        np.testing.assert_array_equal(plain.images[0], back.images[0])
    finally:
        s.unload()


def _ours(hook) -> bool:
    """Not transformers' own output-capturing hooks (installed once, on a text encoder's first call)."""
    return "output_capturing_hook" not in getattr(hook, "__qualname__", "")


def _hooks_left(module: torch.nn.Module) -> list[str]:
    left = []
    for name, m in module.named_modules():
        hooks = [h for h in (*m._forward_pre_hooks.values(), *m._forward_hooks.values()) if _ours(h)]
        if hooks:
            left.append(f"{name or '<root>'}: {len(hooks)} hooks")
        for attr in ("forward", "decode", "_hf_hook"):
            if attr in m.__dict__:
                left.append(f"{name or '<root>'}.{attr}")
    return left


def _as_loaded(folder, plan):
    """The hooks and instance attributes a component has straight from the loader (transformers installs
    output-recording hooks of its own): what an unloaded component must be back to."""
    from lowvram.generate.loader import load_pipeline

    _, modules = load_pipeline(folder, plan, torch.float32)
    return {n: _hooks_left(m) for n, m in modules.items()}


def test_switching_models_unloads_completely(folders):
    s = _session(vram_gb=1)  # small budget: components stream, so the executor installs its hooks
    rss = []
    try:
        for i in range(5):
            for m in ("sd15", "sdxl"):
                s.run(_req(folders[m], seed=0))
                loaded = s.loaded
                modules, plan = loaded.modules, loaded.plan
                assert any(c.placement == "streamed" for c in plan.components)
                s.unload()
                assert s.loaded is None
                if i == 0:
                    assert {n: _hooks_left(mod) for n, mod in modules.items()} == _as_loaded(folders[m], plan)
                del loaded, modules
            gc.collect()
            rss.append(psutil.Process().memory_info().rss)
    finally:
        s.unload()
    assert rss[-1] <= rss[0] * 1.10, [r / 2**20 for r in rss]


def test_bad_values_are_refused_before_loading(folders, tmp_path):
    s = _session()
    cases = [dict(width=0), dict(guidance=float("nan")), dict(guidance=float("inf")), dict(seed=2**70),
             dict(steps=0), dict(batch=0), dict(output=str(tmp_path)), dict(output=str(tmp_path / "no" / "x.png"))]
    for kw in cases:
        with pytest.raises(UserError):
            s.run(_req(folders["sd15"], **kw))
        assert s.loaded is None, kw


def test_random_seed_is_reported(folders):
    s = _session()
    try:
        res = s.run(_req(folders["sd15"], seed=-1, batch=2))
    finally:
        s.unload()
    assert 0 <= res.seeds[0] < 2**32 and res.seeds[1] == res.seeds[0] + 1
    assert f"Seed: {res.seeds[1]}" in res.infotexts[1]


def test_controlnet_guidance_window_is_checked_before_any_weight_is_read(folders, tmp_path):
    """The fraction of the steps a ControlNet acts in (A1111's guidance_start / guidance_end) must be a
    window inside 0..1: one sentence, and nothing loaded."""
    from PIL import Image

    (tmp_path / "config.json").write_text('{"_class_name": "ControlNetModel"}')
    s = _session()
    for start, end in ((0.6, 0.4), (0.0, 1.5), (float("nan"), 1.0)):
        with pytest.raises(UserError, match="start below its end"):
            s.run(_req(folders["sd15"], controlnet=str(tmp_path), control_image=Image.new("RGB", (64, 64)),
                       control_start=start, control_end=end))
    assert s.loaded is None
