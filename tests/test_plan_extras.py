"""ControlNet and LoRA in the plan: their figures come from the simulation and the files, never from
fixed fractions, and the runtime places a ControlNet as the plan says."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from tiny import TINY

from lowvram.catalogue import MODELS, build_component
from lowvram.catalogue.controlnet import DEFAULTS, pairs_with
from lowvram.checkpoints.lora_size import lora_file_bytes
from lowvram.errors import UserError
from lowvram.plan import Machine, Policy, Workload, make_plan
from lowvram.plan.facts import component_facts
from lowvram.contract import ComponentPlan, Plan
from lowvram.runtime.executor import PlanExecutor
from lowvram.simulate import SimRequest, run_tracked, simulate_component
from lowvram.simulate.run import build_inputs

GiB = 2**30
BASE = Machine("test card", 8 * GiB, 32 * GiB, link_bytes_per_s=12.5e9, tflops=40.0, bf16=True, fp8=True)


def _tiny_controlnet(model: str) -> dict:
    """The tiny denoiser config of tests/fixtures/tiny.py as a ControlNet of the same shape."""
    if model == "flux-dev":
        return dict(TINY["flux-dev-transformer"], num_single_layers=1)
    cfg = {k: v for k, v in TINY[f"{model}-unet"].items() if k not in ("up_block_types", "sample_size")}
    return dict(cfg, conditioning_embedding_out_channels=[8, 8, 8, 8])  # 8x down, like the published ones


CASES = [("sd15", SimRequest(batch=2, width=64, height=64, dtype="fp32", target="cpu")),
         ("sdxl", SimRequest(batch=2, width=64, height=64, dtype="fp32", target="cpu")),
         ("flux-dev", SimRequest(batch=1, width=128, height=128, dtype="fp32", target="cpu"))]


@pytest.mark.parametrize("model,req", CASES, ids=[m for m, _ in CASES])
def test_controlnet_simulation_matches_a_real_run(model, req):
    """Same check as test_simulate.py for the denoisers: a tiny ControlNet runs for real under the tracker."""
    spec, cn = MODELS[model], DEFAULTS[model]
    tiny = _tiny_controlnet(model)
    torch.manual_seed(0)
    measured = run_tracked(build_component(cn, "cpu", dtype=torch.float32, config_overrides=tiny), spec, cn, req)
    predicted = simulate_component(spec, cn, req, use_cache=False, config_overrides=tiny)
    assert measured.activation_peak_bytes > 0 and measured.output_bytes > 0
    assert predicted.weights_bytes == measured.weights_bytes
    assert abs(predicted.activation_peak_bytes - measured.activation_peak_bytes) <= 0.02 * measured.activation_peak_bytes
    assert predicted.output_bytes == measured.output_bytes
    assert predicted.flops == measured.flops


def test_real_size_controlnets_are_counted_from_their_published_configs():
    # lllyasviel/control_v11p_sd15_canny: 1.45 GB fp32; diffusers/controlnet-canny-sdxl-1.0: 2.50 GB fp16;
    # InstantX/FLUX.1-dev-Controlnet-Canny: 3.58 GB bf16 (5 double blocks, no single blocks)
    assert component_facts(DEFAULTS["sd15"]).params == 361_279_120
    assert component_facts(DEFAULTS["sdxl"]).params == 1_251_014_160
    assert component_facts(DEFAULTS["flux-dev"]).params == 1_791_605_248
    # each pairs with its model's denoiser (so the planner simulates their step), not with another's
    den = lambda m: MODELS[m].by_role("denoiser")[0]  # noqa: E731
    assert all(pairs_with(den(m), DEFAULTS[m]) for m in ("sd15", "sdxl", "flux-dev", "flux-schnell"))
    assert not pairs_with(den("sd15"), DEFAULTS["sdxl"]) and not pairs_with(den("sdxl"), DEFAULTS["sd15"])
    sdxl = MODELS["sdxl"]
    r = simulate_component(sdxl, DEFAULTS["sdxl"], SimRequest(batch=2, width=1024, height=1024))
    unet = simulate_component(sdxl, sdxl.component("unet"), SimRequest(batch=2, width=1024, height=1024))
    # a ControlNet is the UNet's encoder half: under half its FLOPs, a sizeable share of its activations
    assert 0.3 * unet.flops < r.flops < 0.5 * unet.flops
    assert 0.5 * unet.activation_peak_bytes < r.activation_peak_bytes < 1.5 * unet.activation_peak_bytes


@pytest.mark.parametrize("model,req", CASES[1:], ids=[m for m, _ in CASES[1:]])
def test_controlnet_step_simulation_matches_a_real_step(model, req):
    """The phase's peak: a tiny ControlNet then its denoiser with the residuals, run for real as the
    pipeline runs them, against the fake-tensor simulation of the same step."""
    spec, cn_spec = MODELS[model], DEFAULTS[model]
    den_spec = spec.by_role("denoiser")[0]
    # a small control-image embedding, so the denoiser's call (not the ControlNet's) sets the peak
    tiny = {"controlnet": _tiny_controlnet(model), "denoiser": TINY[den_spec.config]}
    if model == "sdxl":
        tiny["controlnet"]["conditioning_embedding_out_channels"] = [2, 2, 2, 2]
    step = replace(req, op="step")
    torch.manual_seed(0)
    pair = torch.nn.ModuleDict({side: build_component(s, "cpu", dtype=torch.float32, config_overrides=tiny[side])
                                for side, s in (("controlnet", cn_spec), ("denoiser", den_spec))})
    measured = run_tracked(pair, spec, cn_spec, step)
    predicted = simulate_component(spec, cn_spec, step, use_cache=False, config_overrides=tiny)
    alone = run_tracked(pair["controlnet"], spec, cn_spec, req)
    assert measured.activation_peak_bytes > alone.activation_peak_bytes  # the denoiser's call with residuals
    assert abs(predicted.activation_peak_bytes - measured.activation_peak_bytes) <= 0.02 * measured.activation_peak_bytes
    assert predicted.flops == measured.flops > alone.flops


@pytest.mark.parametrize("model", ["sd15", "sdxl", "flux-dev"])
def test_plan_with_controlnet_never_exceeds_the_budget(model):
    spec = MODELS[model]
    wl = Workload(spec.width, spec.height, 1, spec.steps, controlnet=True)
    plain_wl = replace(wl, controlnet=False)
    for quality in ("lossless", "fast"):
        prev = None
        for vram in (4, 6, 8, 12, 16, 24, 48):
            m = replace(BASE, vram_bytes=vram * GiB, ram_bytes=64 * GiB)
            p = make_plan(spec, wl, m, Policy(quality), find_smallest=False)
            plain = make_plan(spec, plain_wl, m, Policy(quality), find_smallest=False)
            if not p.fits:
                continue
            den = next(c for c in p.components if c.role == "denoiser")
            cn = next(c for c in p.components if c.role == "controlnet")
            # the phase holds both components' weights and the step's activations, under the card's VRAM
            assert den.vram_bytes + cn.vram_bytes + den.activation_bytes + p.reserve_bytes <= p.peak_vram_bytes <= m.vram_bytes
            assert den.activation_bytes >= cn.activation_bytes  # the phase's peak covers the ControlNet's call
            assert cn.params == component_facts(DEFAULTS[model]).params and cn.calls_per_image == den.calls_per_image
            assert plain.fits and p.seconds_per_step > plain.seconds_per_step  # a ControlNet is never free
            if prev is not None:
                assert p.seconds_per_image <= prev.seconds_per_image * (1 + 1e-9)  # more VRAM is never slower
            if quality == "lossless":
                assert cn.precision in ("bf16", "fp16")
            prev = p


def test_big_card_keeps_the_controlnet_resident_and_small_card_streams_it():
    spec = MODELS["sdxl"]
    wl = Workload(1024, 1024, 1, 30, controlnet=True)
    big = make_plan(spec, wl, replace(BASE, vram_bytes=48 * GiB, ram_bytes=64 * GiB))
    cn = next(c for c in big.components if c.role == "controlnet")
    assert cn.placement == "resident" and cn.streamed_bytes == 0 and cn.vram_bytes == cn.stored_bytes
    small = make_plan(spec, wl, replace(BASE, vram_bytes=3 * GiB, ram_bytes=64 * GiB))
    den = next(c for c in small.components if c.role == "denoiser")
    cn = next(c for c in small.components if c.role == "controlnet")
    assert small.fits and "streamed" in (den.placement, cn.placement)
    # a step moves what stays off the GPU of both, so it is at least that over the link
    assert small.seconds_per_step >= (den.streamed_bytes + cn.streamed_bytes) / BASE.link_bytes_per_s


def test_instantx_flux_controlnet_plans_the_vae_encode_of_its_control_image():
    spec = MODELS["flux-dev"]
    cn = make_plan(spec, Workload(1024, 1024, 1, 28, controlnet=True), BASE)
    i2i = make_plan(spec, Workload(1024, 1024, 1, 28, img2img=True), BASE)
    vae = lambda p: next(c for c in p.components if c.role == "vae")  # noqa: E731
    assert vae(cn).activation_bytes == vae(i2i).activation_bytes


def _save_tiny_controlnet(folder, **kw):
    import diffusers

    torch.manual_seed(0)
    cn = diffusers.ControlNetModel(**{**_tiny_controlnet("sdxl"), **kw})
    cn.save_pretrained(str(folder))
    return sum(p.numel() for p in cn.parameters())


def test_a_controlnet_folder_is_planned_from_its_own_config_and_weights(tmp_path):
    n = _save_tiny_controlnet(tmp_path / "cn")
    spec = MODELS["sdxl"]
    p = make_plan(spec, Workload(1024, 1024, 1, 30, controlnet_path=str(tmp_path / "cn")), BASE)
    cn = next(c for c in p.components if c.role == "controlnet")
    default = make_plan(spec, Workload(1024, 1024, 1, 30, controlnet=True), BASE)
    assert cn.params == n and cn.stored_bytes == 2 * n and str(tmp_path / "cn") in cn.notes
    assert p.seconds_per_step < default.seconds_per_step  # a tiny ControlNet costs less than the published one
    # a config that does not describe the weights next to it: two models mixed up
    other = tmp_path / "other"
    _save_tiny_controlnet(other, block_out_channels=[16, 64])
    (tmp_path / "cn" / "config.json").write_text((other / "config.json").read_text())
    with pytest.raises(UserError, match="mixes two ControlNets"):
        make_plan(spec, Workload(1024, 1024, 1, 30, controlnet_path=str(tmp_path / "cn")), BASE)
    with pytest.raises(UserError, match="does not pair with flux-dev"):
        make_plan(MODELS["flux-dev"], Workload(1024, 1024, 1, 28, controlnet_path=str(other)), BASE)


def _lora(path, rank=8, dtype=torch.float32):
    from safetensors.torch import save_file

    sd = {"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(rank, 640, dtype=dtype),
          "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight": torch.zeros(640, rank, dtype=dtype),
          "lora_unet_down_blocks_1_attentions_0_proj_in.alpha": torch.tensor(float(rank))}
    save_file(sd, str(path))
    return (2 * rank * 640 + 1) * 2  # elements at 2 bytes (the compute dtype), whatever the file stores


def test_lora_bytes_come_from_the_file(tmp_path):
    expected = _lora(tmp_path / "a.safetensors")
    assert lora_file_bytes(str(tmp_path / "a.safetensors")) == expected  # fp32 file, planned at 2 bytes
    assert _lora(tmp_path / "b.safetensors", 16, torch.bfloat16) == lora_file_bytes(str(tmp_path / "b.safetensors"))
    spec = MODELS["sdxl"]
    m = replace(BASE, vram_bytes=48 * GiB, ram_bytes=64 * GiB)  # all resident: the peak is the largest phase
    plain = make_plan(spec, Workload(1024, 1024, 1, 30), m)
    with_file = make_plan(spec, Workload(1024, 1024, 1, 30, lora_bytes=(expected,)), m)
    by_count = make_plan(spec, Workload(1024, 1024, 1, 30, loras=1), m)
    assert with_file.workload.loras == 1
    assert with_file.peak_vram_bytes - plain.peak_vram_bytes == expected
    from lowvram.plan.cost import LORA_BYTES

    assert by_count.peak_vram_bytes - plain.peak_vram_bytes == LORA_BYTES
    assert any("read from the files" in d for d in with_file.decisions)
    with pytest.raises(UserError, match="does not exist"):
        lora_file_bytes(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError):
        Workload(64, 64, lora_bytes=(1, 2), loras=3)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_plan_with_controlnet_and_lora_files(tmp_path):
    _save_tiny_controlnet(tmp_path / "cn")
    lora = tmp_path / "style.safetensors"
    size = _lora(lora)
    r = _cli("plan", "sdxl", "--gpu", "RTX 4060", "--controlnet", str(tmp_path / "cn"), "--lora", f"{lora}:0.8", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["workload"]["lora_bytes"] == [size] and obj["workload"]["loras"] == 1
    assert obj["workload"]["controlnet"] and obj["workload"]["controlnet_path"] == str(tmp_path / "cn")
    cn = next(c for c in obj["components"] if c["role"] == "controlnet")
    assert set(ComponentPlan.__dataclass_fields__) <= set(cn) and cn["placement"] in ("resident", "streamed")
    assert cn["params"] < 10**6  # the folder's tiny ControlNet, not the published one
    r = _cli("plan", "sdxl", "--gpu", "RTX 4060", "--controlnet")  # bare: the published ControlNet
    assert r.returncode == 0 and "ControlNet beside it" in r.stdout and "1.25 B" in r.stdout, r.stderr


@pytest.mark.parametrize("args,words", [
    (("plan", "sd21", "--vram", "8GB", "--controlnet"), "not sd21"),
    (("plan", "sdxl", "--vram", "8GB", "--controlnet", "/no/such/folder"), "does not exist"),
    (("plan", "sdxl", "--vram", "8GB", "--lora", "/no/such.safetensors"), "does not exist"),
    (("plan", "sdxl", "--vram", "8GB", "--lora", "x.safetensors", "--loras", "2"), "not both"),
])
def test_cli_plan_bad_controlnet_and_lora(args, words):
    r = _cli(*args)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr


def _cp(name, role, placement, k=0, total=0):
    return ComponentPlan(name=name, role=role, params=0, stored_bytes=0, placement=placement, precision="fp16",
                         compute_dtype="fp32", vram_bytes=0, resident_units=k, total_units=total)


def test_executor_streams_a_controlnet_the_plan_streams():
    """What the planner decides for the ControlNet is what runs: its resident prefix, beside the UNet."""
    spec = MODELS["sdxl"]
    req = SimRequest(batch=2, width=64, height=64, dtype="fp32")
    torch.manual_seed(0)
    unet = build_component(spec.component("unet"), "cpu", dtype=torch.float32, config_overrides=TINY["sdxl-unet"])
    cn = build_component(DEFAULTS["sdxl"], "cpu", dtype=torch.float32, config_overrides=_tiny_controlnet("sdxl"))
    _, kw = build_inputs(cn, spec, DEFAULTS["sdxl"], req)

    def step():
        down, mid = cn(**kw)
        return unet(sample=kw["sample"], timestep=kw["timestep"], encoder_hidden_states=kw["encoder_hidden_states"],
                    added_cond_kwargs=kw["added_cond_kwargs"], down_block_additional_residuals=down,
                    mid_block_additional_residual=mid)[0]

    with torch.no_grad():
        ref = step().clone()
    from lowvram.structure import streamable_units

    n = len(streamable_units(cn))
    plan = Plan(model="sdxl", policy="lossless", fits=True, workload=Workload(64, 64, controlnet=True),
                machine=Machine("cpu", 1 << 30, 1 << 34, 1e10, 1.0),
                components=(_cp("unet", "denoiser", "resident"), _cp("controlnet", "controlnet", "streamed", 2, n)),
                attention="sdpa", attention_chunk=0, cfg_mode="batch", vae_tile=0, peak_vram_bytes=1 << 30,
                peak_ram_bytes=0, seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
    ex = PlanExecutor(plan, {"unet": unet, "controlnet": cn}, "cpu", companions={"controlnet": "unet"}).apply()
    with torch.no_grad():
        for _ in range(2):
            out = step()
    assert torch.equal(out, ref)
    assert ex.phases == ["controlnet", "unet"]
    engine = ex.engines["controlnet"]  # the ControlNet stays beside the UNet for the phase
    assert engine.resident_units == 2 and engine.streamed and engine.stats.copies > 0
    assert "controlnet stream buffers" in ex.accountant.by_owner
    ex.remove()
