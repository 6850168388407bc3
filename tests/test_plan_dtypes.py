"""Lossless means bit-exact weights (issue #10): the stored dtype is kept, or widened to fp32 where the machine
cannot compute in it; never fp16 <-> bf16. And a CPU machine is planned in the dtype the CPU computes in."""

from dataclasses import replace

import pytest

from lowvram.catalogue import MODELS
from lowvram.machines.cards import find_card
from lowvram.plan import Policy, Workload, make_plan
from lowvram.plan.cost import CPU_COMPUTE_DTYPE
from lowvram.plan.machine import cpu_machine, machine_from_card

GiB = 2**30
BIG = 512 * GiB  # VRAM and RAM large enough that every component fits resident: only dtypes are tested
CARDS = {"bf16 card": replace(machine_from_card(find_card("RTX 4090"), BIG), vram_bytes=BIG),
         "fp16-only card": replace(machine_from_card(find_card("GTX 1650"), BIG), vram_bytes=BIG)}
STORED = ("fp16", "bf16", "fp32")
# A lossless widening is the only change allowed: stored -> {kept, fp32}
ALLOWED = {"fp16": {"fp16", "fp32"}, "bf16": {"bf16", "fp32"}, "fp32": {"fp32"}}
NAMES = [n for n in MODELS if n != "deepfloyd-if"]  # IF's three stages are sized like the others; it is slow to plan


def _expected(spec, comp, stored: str, machine) -> str:
    if stored == "bf16" and not machine.bf16:
        return "fp32"
    if stored == "fp16" and comp.role == "vae" and comp.config in ("sdxl-vae", "flux-vae", "sd3-vae"):
        return "fp32"  # force_upcast: these VAEs overflow in fp16
    return stored


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("stored", STORED)
@pytest.mark.parametrize("name", NAMES)
def test_lossless_keeps_or_widens_the_stored_dtype(name, stored, card):
    spec, machine = MODELS[name], CARDS[card]
    files = {c.name: (stored, 1.0) for c in spec.components}  # what inspection reports for a file in that dtype
    # the default size and steps: answered from the shipped simulations, no fake-tensor run
    p = make_plan(spec, Workload(spec.width, spec.height, 1, spec.steps), machine, Policy("lossless"), find_smallest=False,
                  file_weights=files)
    assert p.fits
    for c in p.components:
        comp = spec.component(c.name)
        assert c.precision == c.compute_dtype in ALLOWED[stored], (c.name, c.precision)
        assert c.precision == _expected(spec, comp, stored, machine), c.name
        if c.precision != stored:  # the plan says why
            assert any(d.startswith(f"precision: {c.name}: ") for d in p.decisions), p.decisions


def test_without_a_file_the_catalogue_dtype_is_planned():
    """SDXL is published for inference in fp16: on a bf16 card it runs in fp16, not bf16; its VAE in fp32."""
    p = make_plan(MODELS["sdxl"], Workload(1024, 1024, 1, 30), CARDS["bf16 card"], Policy("lossless"), find_smallest=False)
    assert {c.name: c.precision for c in p.components} == {"unet": "fp16", "text_encoder": "fp16",
                                                           "text_encoder_2": "fp16", "vae": "fp32"}
    assert any("force_upcast" in d for d in p.decisions)
    # HiDream is bf16: a GTX 1650 cannot compute in bf16, so lossless widens to fp32 rather than lowering to fp16
    p = make_plan(MODELS["hidream-i1"], Workload(1024, 1024, 1, MODELS["hidream-i1"].steps), CARDS["fp16-only card"], Policy("lossless"),
                  find_smallest=False)
    assert {c.precision for c in p.components} == {"fp32"}


@pytest.mark.parametrize("stored", STORED)
def test_a_cpu_machine_counts_weights_in_the_cpu_compute_dtype(stored):
    """RAM is the budget; every weight is counted at the CPU's compute dtype (4 bytes for fp32)."""
    spec = MODELS["sd15"]
    m = cpu_machine(16 * GiB)
    assert m.device == "cpu" and m.vram_bytes == 13 * GiB  # 16 GiB less the 3 GiB the process itself takes
    p = make_plan(spec, Workload(512, 512, 1, 25), m, Policy("lossless"),
                  file_weights={c.name: (stored, 1.0) for c in spec.components})
    assert p.fits and p.reserve_bytes == 0
    unet = next(c for c in p.components if c.name == "unet")
    assert unet.precision == unet.compute_dtype == CPU_COMPUTE_DTYPE == "fp32"
    assert unet.weight_bytes == pytest.approx(4 * unet.params, rel=0.01)
    assert all(c.placement != "cpu" for c in p.components)  # "on the CPU" is where everything runs, not a fallback


def test_a_cpu_machine_with_a_weight_budget_streams_the_unet():
    """--vram on a CPU machine: the accountant's budget; what does not fit is streamed."""
    p = make_plan(MODELS["sd15"], Workload(512, 512, 1, 25), cpu_machine(16 * GiB, vram="2GB"), Policy("lossless"))
    unet = next(c for c in p.components if c.name == "unet")
    assert p.fits and unet.placement == "streamed" and p.peak_vram_bytes <= 2 * GiB
