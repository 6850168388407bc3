"""fp8 matmuls (runtime/fp8_matmul.py, plan/fp8_matmul.py): torch._scaled_mm runs on this CPU build
(torch 2.13), so the kernel itself is checked against dequantise-then-matmul with the same activation
quantisation; the speed needs a GPU with fp8 tensor cores (bench/gpu_session.sh)."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_pipelines import build_pipeline

from lowvram.catalogue import MODELS
from lowvram.plan import Machine, Policy, Workload, make_plan
from lowvram.plan.fp8_matmul import fp8_matmul_mode, fp8_matmul_overhead
from lowvram.plan.machine import resolve_machine
from lowvram.runtime.fp8_matmul import MODES, Fp8MatmulConfig, apply_fp8_matmul, fp8_linear, quantize_activation
from lowvram.runtime.precision import PrecisionConfig, apply_weight_precision, quantize_weight

GiB = 2**30
# One bf16 rounding of the output is 2^-8 relative; the tensor-wise mode rounds twice more (the weight
# scale, the bias): allow 4 units.
BF16_TOL = 4 * 2.0**-8


def _reference(x, wq, sw, bias, mode):
    """Dequantise both fp8 operands (with the same activation quantisation) and multiply in fp32."""
    k = wq.shape[1]
    xq, sx = quantize_activation(x.reshape(-1, k), mode)
    y = (xq.float() * sx) @ (wq.float() * sw.float()[:, None]).T
    y = y + bias.float() if bias is not None else y
    return y.reshape(*x.shape[:-1], wq.shape[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n,k", [(48, 64), (24, 40), (7, 3)])  # aligned to 16, and not (padded per call)
@pytest.mark.parametrize("with_bias", [True, False])
def test_scaled_mm_equals_dequantise_then_matmul(mode, n, k, with_bias):
    torch.manual_seed(n * k)
    w, x = torch.randn(n, k), torch.randn(2, 5, k) * 3
    bias = torch.randn(n) if with_bias else None
    wq, sw = quantize_weight(w, "fp8")
    ref = _reference(x, wq, sw, bias, mode)
    y32 = fp8_linear(x, wq, sw, bias, mode, torch.float32)
    assert y32.shape == ref.shape and y32.dtype == torch.float32
    torch.testing.assert_close(y32, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    y16 = fp8_linear(x.bfloat16(), wq, sw.bfloat16(), None if bias is None else bias.bfloat16(), mode, torch.bfloat16)
    ref16 = _reference(x.bfloat16(), wq, sw.bfloat16(), None if bias is None else bias.bfloat16(), mode)
    assert y16.dtype == torch.bfloat16
    assert (y16.float() - ref16).abs().max() <= BF16_TOL * ref16.abs().max()


def test_rowwise_scales_each_row_on_its_own():
    """A row 1e5x larger than the others: with one scale the small rows fall below fp8-e4m3's smallest
    subnormal (2^-9 of the scale) and vanish; per-row scales keep them to fp8's own rounding."""
    torch.manual_seed(1)
    w, x = torch.randn(32, 32), torch.randn(4, 32)
    x[0] *= 1e5
    wq, sw = quantize_weight(w, "fp8")
    exact = x @ (wq.float() * sw[:, None]).T
    err = {m: ((fp8_linear(x, wq, sw, None, m, torch.float32) - exact)[1:].abs().max()).item() for m in MODES}
    assert err["fp8_rowwise"] < err["fp8_tensorwise"] / 5


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    p = build_pipeline("flux-dev", str(tmp_path_factory.mktemp("flux")))
    p.set_progress_bar_config(disable=True)
    return p


def _image(pipe):
    with torch.no_grad():
        return pipe(prompt="a red cube", height=64, width=64, num_inference_steps=4, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images


@pytest.mark.parametrize("mode", MODES)
def test_tiny_flux_fp8_matmul_deviation_and_undo(flux, mode):
    """The whole denoiser through fp8 matmuls: close to the fp8-dequantised image, and removing the
    conversion gives the dequantised image back exactly."""
    original = flux.transformer
    try:
        ref = _image(flux)
        flux.transformer = copy.deepcopy(original)
        n = apply_weight_precision(flux.transformer, PrecisionConfig("fp8", torch.float32))
        dequantised = _image(flux)
        converted = apply_fp8_matmul(flux.transformer, Fp8MatmulConfig(mode, torch.float32))
        assert len(converted.linears) == n > 0
        fp8mm = _image(flux)
        converted.remove()
        assert np.array_equal(_image(flux), dequantised)
    finally:
        flux.transformer = original
    weights_only = np.abs(dequantised - ref).max()
    both = np.abs(fp8mm - ref).max()
    assert 0 < both < 0.1  # image values in [0, 1]; measured figures in docs/benchmarks.md
    assert weights_only < 0.1


# ---------------------------------------------------------------- planner
def test_planner_picks_the_mode_the_card_runs():
    assert fp8_matmul_mode("fp8", resolve_machine("H100")) == "fp8_rowwise"
    assert fp8_matmul_mode("fp8", resolve_machine("RTX 4090")) == "fp8_tensorwise"
    assert fp8_matmul_mode("fp8", resolve_machine("RTX 3090")) == ""  # Ampere: no fp8 tensor cores
    assert fp8_matmul_mode("int8", resolve_machine("RTX 4090")) == ""
    assert fp8_matmul_overhead("transformer") < 0 < fp8_matmul_overhead("vae") + 1


def test_planner_states_fp8_matmuls_and_counts_them_faster():
    card = Machine("ada", 8 * GiB, 32 * GiB, link_bytes_per_s=25e9, tflops=165.0, bf16=True, fp8=True, arch="Ada")
    wl = Workload(1024, 1024, 1, 28)
    with_mm = make_plan(MODELS["flux-dev"], wl, card, Policy("fast"))
    without = make_plan(MODELS["flux-dev"], wl, replace(card, fp8=False), Policy("fast"))
    den = next(c for c in with_mm.components if c.role == "denoiser")
    den0 = next(c for c in without.components if c.role == "denoiser")
    assert den.precision == den0.precision == "fp8"
    assert den.matmul == "fp8_tensorwise" and den0.matmul == ""
    assert "torch._scaled_mm" in den.notes
    assert den.seconds_per_call <= den0.seconds_per_call
    cpu = make_plan(MODELS["sd15"], Workload(512, 512, 1, 20), replace(card, device="cpu", arch="cpu"), Policy("fast"))
    assert all(c.matmul == "" for c in cpu.components)


def test_the_executor_applies_the_plans_fp8_matmul_and_undoes_it():
    """A plan whose transformer says matmul="fp8_tensorwise": the executor converts its fp8 Linears (the
    loader stored them in fp8) and streams them like any weights; remove() gives the dequantising path back."""
    from tiny import TINY

    from lowvram.catalogue import build_component
    from lowvram.contract import ComponentPlan, Plan
    from lowvram.runtime.executor import PlanExecutor
    from lowvram.simulate import SimRequest
    from lowvram.simulate.run import build_inputs

    spec = MODELS["flux-dev"]
    torch.manual_seed(0)
    den = build_component(spec.component("transformer"), "cpu", dtype=torch.float32,
                          config_overrides=TINY["flux-dev-transformer"])
    apply_weight_precision(den, PrecisionConfig("fp8", torch.float32))  # what the loader does for an fp8 plan
    cp = ComponentPlan(name="transformer", role="denoiser", params=0, stored_bytes=0, placement="streamed",
                       precision="fp8", compute_dtype="fp32", vram_bytes=0, resident_units=1, matmul="fp8_tensorwise")
    plan = Plan(model="flux-dev", policy="fast", fits=True, workload=Workload(128, 128),
                machine=Machine("cpu", 1 << 30, 1 << 34, 1e10, 1.0), components=(cp,), attention="sdpa",
                attention_chunk=0, cfg_mode="none", vae_tile=0, peak_vram_bytes=1 << 30, peak_ram_bytes=0,
                seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
    torch.manual_seed(1)
    fn, kw = build_inputs(den, spec, spec.component("transformer"), SimRequest(batch=1, width=128, height=128,
                                                                               dtype="fp32"))
    with torch.no_grad():
        dequantised = fn(**kw)[0].clone()
        converted = apply_fp8_matmul(copy.deepcopy(den), Fp8MatmulConfig("fp8_tensorwise", torch.float32))
        ex = PlanExecutor(plan, {"transformer": den}, "cpu").apply()
        streamed = fn(**kw)[0].clone()
        ex.remove()
        after = fn(**kw)[0]
    assert len(ex._fp8_matmuls) == 0 and len(converted.linears) > 0
    assert not torch.equal(streamed, dequantised)  # activations were quantised: another path ran
    torch.testing.assert_close(streamed, dequantised, rtol=0.2, atol=0.2 * dequantised.abs().max().item())
    assert torch.equal(after, dequantised)
