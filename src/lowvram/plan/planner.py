"""Search the ways to run a model on a machine and return the fastest that fits.

Components run in phases (text encoders, then the denoiser, then the VAE) and each leaves the GPU
before the next phase, so the VRAM constraint is per phase and each component's choice is independent
of the others' except through RAM. For each component we enumerate options (placement x precision,
and for the denoiser CFG as one batch or two), size each from the simulation (activations, FLOPs)
and the unit sizes (weights), keep the feasible ones, add each one's disk-backed variant, and pick the
fastest combination whose host copies fit in RAM (a small knapsack, `_select`).

A ControlNet shares its denoiser's phase, so the two are sized together: each denoiser option carries
the ControlNet's placement as its companion (`_with_controlnet`). LoRA factors stay on the GPU from
load to the end, so every GPU phase leaves room for them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..catalogue import ComponentSpec, ModelSpec
from ..simulate import SimRequest, simulate_component
from ..units import format_bytes
from . import cost, explain
from .compile_choice import with_compile_choice
from .controlnet import PlannedControlNet, resolve_controlnet
from .dtypes import FLOAT_DTYPES, file_quant, half_dtype, lossless_dtype, stored_dtype
from .facts import ComponentFacts, component_facts
from .fp8_matmul import fp8_matmul_mode, fp8_matmul_note, fp8_matmul_overhead
from .interleave import vram_bytes
from .load_time import with_load_times
from ..contract import STAGING_BUFFERS, ComponentPlan, Machine, Plan, Policy, Workload

# (model, component, request) -> SimResult: simulate_component, or the readout's estimating source
Simulate = Callable[..., object]


@dataclass(frozen=True)
class Option:
    plan: ComponentPlan
    seconds_per_image: float  # this component's share of one image
    vram_peak: int  # weights on GPU + activations during its phase (reserve excluded)
    ram_bytes: int  # host copy of its weights this option needs
    cfg_mode: str = "none"
    vae_tile: int = 0
    total_bytes: int = 0  # weights at the option's precision (what one image moves at least once)
    compute_s: float = 0.0  # per call, without waiting for copies
    overhead_s: float = 0.0  # per call, per-unit streaming overhead
    streamed_bytes: int = 0  # copied host -> device per call, companion included
    companion: ComponentPlan | None = None  # the ControlNet sharing a denoiser's phase
    place_s: float = 0.0  # this image's share of placing the weights (in seconds_per_image; the rest is calls)
    # What the disk-backed variant needs to choose its own resident prefix (empty: keep this one's)
    unit_bytes: tuple[int, ...] = ()
    weight_budget: int = 0  # VRAM its weights may take (the budget less activations and LoRA factors)


def _precisions(policy: str, lossless: str, machine: Machine) -> list[str]:
    """Lossless: the bit-exact dtype only. Otherwise also 8-bit weights, and the machine's 16-bit type
    where the bit-exact one is fp32."""
    if policy == "lossless":
        return [lossless]
    half = half_dtype(machine)
    return [lossless] + ([half] if half != lossless else []) + ["fp8", "int8"]


def _compute_for(precision: str, machine: Machine) -> str:
    """Weights held in a float dtype compute in it; 8-bit and GGUF weights in the machine's 16-bit type."""
    return precision if precision in FLOAT_DTYPES else half_dtype(machine)


def _activations(act16: int, compute: str) -> int:
    """Simulated (16-bit) activations at `compute`: fp32 doubles every floating tensor."""
    return act16 * cost.FP32_ACTIVATION_SCALE if compute == "fp32" else act16


def _sim_dtype(machine: Machine) -> str:
    """The dtype simulations run in: the machine's 16-bit type, 16 bits always (a CPU's fp32 is scaled from
    bf16, cost.FP32_ACTIVATION_SCALE)."""
    half = half_dtype(machine)
    return "bf16" if half == "fp32" else half


def _fit_units(unit_bytes: list[int], budget: int) -> tuple[int, int] | None:
    """Largest K so the first K units + a double buffer of the largest remaining unit fit in budget.
    Returns (K, vram bytes) or None if even K = 0 does not fit."""
    n = len(unit_bytes)
    total = sum(unit_bytes)
    if total <= budget:
        return n, total
    # suffix max of remaining units (the prefetch buffers must hold the largest unit still streamed)
    suffix_max = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix_max[i] = max(unit_bytes[i], suffix_max[i + 1])
    best = None
    resident = 0
    for k in range(n):
        need = resident + 2 * suffix_max[k]
        if need <= budget:
            best = (k, need)
        else:
            break
        resident += unit_bytes[k]
    return best


def _unit_bytes(facts: ComponentFacts, precision: str, compute: str, file_ratio: float | None) -> tuple[list[int], float]:
    """Each unit's bytes at `precision` (8-bit: the rest in `compute`), and the compute overhead of
    dequantising it per layer."""
    if precision in cost.BYTES_PER_WEIGHT:
        return facts.unit_bytes(precision, compute), cost.DEQUANT_OVERHEAD[precision]
    # a GGUF type already in the file: its bytes (the ratio is per bf16 byte), dequantised per layer
    return ([int(b * (file_ratio or 1.0)) for b in facts.unit_bytes("bf16")],
            cost.GGUF_DEQUANT_OVERHEAD.get(precision, cost.GGUF_DEQUANT_OVERHEAD_DEFAULT))


def _stored_bytes(facts: ComponentFacts, precision: str, stored: str, unit_bytes: list[int]) -> int:
    """What the weights take where they are stored: a GGUF type's own bytes (the file's), else the
    stored dtype's (plan/dtypes.py; 8-bit storage and fp32 widening are made at load time, not stored)."""
    return sum(unit_bytes) if _is_gguf(precision) else sum(facts.unit_bytes(stored))


def _is_gguf(precision: str) -> bool:
    return precision not in cost.BYTES_PER_WEIGHT


def _gguf_note(precision: str, overhead: float) -> str:
    return f"GGUF {precision} as stored, dequantised per layer (+{overhead:.0%} compute)" if _is_gguf(precision) else ""


def _matmul(precision: str, machine: Machine, kind: str, overhead: float) -> tuple[str, float, str]:
    """(matmul mode, compute overhead, note): fp8 weights on a card with fp8 tensor cores multiply in fp8
    (plan/fp8_matmul.py) instead of paying the per-layer dequantisation `overhead`."""
    mode = fp8_matmul_mode(precision, machine)
    if not mode:
        return "", overhead, _gguf_note(precision, overhead)
    fp8_overhead = fp8_matmul_overhead(kind)
    return mode, fp8_overhead, fp8_matmul_note(mode, fp8_overhead)


def _compute_seconds(flops: int, machine: Machine, overhead: float, kind: str, compute: str) -> float:
    """`kind` (transformer / unet / vae / text_encoder) picks a measured efficiency where there is one; a
    GPU computing in fp32 runs at cost.FP32_GPU_RATE of its tensor rate (a CPU's figure is fp32 already)."""
    rate = machine.tflops * 1e12 * cost.compute_efficiency(machine.arch, kind)
    if compute == "fp32" and machine.device != "cpu":
        rate *= cost.FP32_GPU_RATE
    return flops / rate * (1 + overhead)


# A smaller resident prefix is chosen only when it makes an image at least this much faster: streaming two
# tiny units to save a millisecond buys buffers and hooks for less than the cost model can tell apart, and
# flips the plan between "resident" and "streamed" on noise. (Our choice; the models' accuracy is ~10 %.)
RESIDENT_PREFERENCE = 0.01


@dataclass(frozen=True)
class Residency:
    """A resident prefix chosen for one component at one precision, and what it costs."""
    k: int  # the first k units stay on the GPU, the rest stream through two buffers
    vram: int
    streamed: int
    overhead_s: float  # per call, per streamed unit
    place_s: float
    seconds_per_image: float
    per_call_s: float  # one call: compute, the streamed copies behind it, overheads


def _residency(unit_bytes: list[int], budget: int, compute_s: float, calls: int, bw: float, extra: int = 0,
               images_per_load: int = 1, mapped: bool = False, resident_only: bool = False,
               host: bool = False) -> Residency | None:
    """The resident prefix that makes an image fastest within `budget`, None if none fits.

    Usually the largest that fits, but not always: weights made resident are copied before the first
    call, while streamed ones are copied behind compute. From a file mapping (disk speed) a compute-bound
    component places faster with fewer resident units, and a prefix too large would make a bigger card
    plan slower. Every prefix is tried (components have at most a few hundred units); it keeps the
    largest prefix within RESIDENT_PREFERENCE of the fastest. extra: LoRA factors placed with the component.
    host: a CPU machine (Machine.device "cpu"), whose weights held in RAM are where they compute: no placement."""
    n, total = len(unit_bytes), sum(unit_bytes)
    suffix_max = [0] * (n + 1)  # the prefetch buffers must hold the largest unit still streamed
    for i in range(n - 1, -1, -1):
        suffix_max[i] = max(unit_bytes[i], suffix_max[i + 1])
    feasible, resident = [], 0  # (k, resident bytes, vram)
    for k in range(n + 1):
        vram = total if k == n else resident + 2 * suffix_max[k]
        if vram <= budget and (k == n or not resident_only):
            feasible.append((k, resident, vram))
        if k < n:
            resident += unit_bytes[k]
    if not feasible:
        return None
    # From RAM, while copying a resident byte costs no more than page-locking a streamed one (or nothing is
    # placed: a CPU machine), a larger prefix is never slower (placement and calls both shrink): the largest
    # wins without pricing the rest.
    if not mapped and (host or min(cost.PAGEABLE_H2D_BYTES_PER_S, bw) >= cost.PIN_BYTES_PER_S * images_per_load):
        feasible = feasible[-1:]
    priced = []
    for k, resident, vram in feasible:
        place = _place_seconds(total + extra, total - resident, bw, mapped, images_per_load, host)
        per_call = _call_seconds(compute_s, total - resident, bw, cost.PER_UNIT_OVERHEAD_S * (n - k))
        priced.append((place + max(calls, 1) * per_call, place, per_call, k, resident, vram))
    fastest = min(c[0] for c in priced)
    # the largest prefix within RESIDENT_PREFERENCE of the fastest (feasible is in increasing k)
    secs, place, per_call, k, resident, vram = next(c for c in reversed(priced) if c[0] <= fastest * (1 + RESIDENT_PREFERENCE))
    return Residency(k, vram, total - resident, cost.PER_UNIT_OVERHEAD_S * (n - k), place, secs, per_call)


def _gpu_options(spec: ComponentSpec, role_calls: int, flops: int, act16: int, machine: Machine, budget: int,
                 precisions: list[str], stored: str, per_image_calls: int,
                 extra_weights: int = 0, file_ratio: float | None = None, images_per_load: int = 1,
                 resident_only: bool = False) -> list[Option]:
    """Resident / streamed options on the device for one component.

    act16: the simulated (16-bit) activation peak of one call; stored: the dtype the weights are stored in.
    role_calls: forward calls per step (2 with split CFG); per_image_calls: steps (denoiser) or 1.
    extra_weights: LoRA factors, on the GPU beside the component for its whole phase (not its own weights).
    images_per_load: images the loaded weights serve (Workload.images_per_load), sharing the pinning.
    resident_only: whole components only (the VAE: tiling it beats streaming it).
    """
    facts = component_facts(spec)
    out = []
    for p in precisions:
        compute = _compute_for(p, machine)
        act = _activations(act16, compute)
        ub, overhead = _unit_bytes(facts, p, compute, file_ratio)
        matmul, overhead, note = _matmul(p, machine, _kind(spec), overhead)
        compute_s = _compute_seconds(flops, machine, overhead, _kind(spec), compute)
        weight_budget = budget - act - extra_weights
        r = _residency(ub, weight_budget, compute_s, role_calls * per_image_calls, machine.link_bytes_per_s,
                       extra_weights, images_per_load, resident_only=resident_only, host=machine.device == "cpu")
        if r is None:
            continue
        total = sum(ub)
        plan = ComponentPlan(
            name=spec.name, role=spec.role, params=facts.params, stored_bytes=_stored_bytes(facts, p, stored, ub),
            placement="resident" if r.k == len(ub) else "streamed", precision=p, compute_dtype=compute,
            vram_bytes=r.vram, resident_units=r.k, total_units=len(ub), streamed_bytes=r.streamed, activation_bytes=act,
            seconds_per_call=r.per_call_s, calls_per_image=role_calls * per_image_calls, notes=note,
            weight_bytes=total, matmul=matmul, compute_seconds=compute_s)
        # RAM: a pinned host copy of the whole component — what is streamed, and what is reloaded for
        # the next image after the phase evicts it.
        out.append(Option(plan, r.seconds_per_image, r.vram + extra_weights + act, total, total_bytes=total + extra_weights,
                          compute_s=compute_s, overhead_s=r.overhead_s, streamed_bytes=r.streamed, place_s=r.place_s,
                          unit_bytes=tuple(ub), weight_budget=weight_budget))
    return out


def _with_controlnet(spec: ComponentSpec, cn: PlannedControlNet, role_calls: int, flops: int, cn_flops: int, act16: int,
                     cn_act16: int, machine: Machine, budget: int, precisions: list[str], cn_precisions: list[str],
                     stored: str, steps: int, extra_weights: int = 0,
                     file_ratio: float | None = None, images_per_load: int = 1) -> list[Option]:
    """Options for a denoiser whose ControlNet shares its phase (`act`: the phase's activation peak).

    Both run once per denoiser call, so their copies share the link and their compute adds up. For each
    pair of precisions, every split of the budget between the two resident prefixes is tried (the
    ControlNet has a few dozen units) and the one that makes an image fastest is kept.
    """
    facts, cn_facts = component_facts(spec), component_facts(cn.spec)
    bw = machine.link_bytes_per_s
    calls = role_calls * steps
    out = []
    for p in precisions:
        compute = _compute_for(p, machine)
        ub, overhead = _unit_bytes(facts, p, compute, file_ratio)
        matmul, overhead, note = _matmul(p, machine, _kind(spec), overhead)
        own_s = _compute_seconds(flops, machine, overhead, _kind(spec), compute)
        for q in cn_precisions:
            cn_compute = _compute_for(q, machine)
            # the phase's peak is in the wider of the two dtypes
            act = _activations(act16, "fp32" if "fp32" in (compute, cn_compute) else compute)
            cn_act = _activations(cn_act16, cn_compute)
            cub, cn_overhead = _unit_bytes(cn_facts, q, cn_compute, None)
            cn_matmul, cn_overhead, cn_note = _matmul(q, machine, _kind(cn.spec), cn_overhead)
            compute_s = own_s + _compute_seconds(cn_flops, machine, cn_overhead, _kind(cn.spec), cn_compute)
            total = sum(ub) + sum(cub)
            best = None
            for kc in range(len(cub), -1, -1):
                cn_vram = vram_bytes(cub, set(range(kc)))  # its first kc units + two buffers
                fit = _fit_units(ub, budget - act - extra_weights - cn_vram)
                if fit is None:
                    continue
                k, vram = fit
                streamed = sum(ub[k:]) + sum(cub[kc:])
                # per streamed unit, plus the ControlNet's own forward call each step
                overhead_s = cost.PER_UNIT_OVERHEAD_S * (len(ub) - k + len(cub) - kc) + cost.PER_CALL_OVERHEAD_S
                place = _place_seconds(total + extra_weights, streamed, bw, images_per_load=images_per_load,
                                       host=machine.device == "cpu")
                secs = place + calls * _call_seconds(compute_s, streamed, bw, overhead_s)
                if best is None or (secs, vram + cn_vram) < (best[0], best[2] + best[4]):
                    best = (secs, k, vram, kc, cn_vram, streamed, overhead_s, place)
            if best is None:
                continue
            secs, k, vram, kc, cn_vram, streamed, overhead_s, place = best
            cn_s = compute_s - own_s
            plan = ComponentPlan(
                name=spec.name, role=spec.role, params=facts.params, stored_bytes=_stored_bytes(facts, p, stored, ub),
                placement="resident" if k == len(ub) else "streamed", precision=p, compute_dtype=compute,
                vram_bytes=vram, resident_units=k, total_units=len(ub), streamed_bytes=sum(ub[k:]),
                activation_bytes=act, calls_per_image=calls, notes=note, weight_bytes=sum(ub), matmul=matmul,
                seconds_per_call=_call_seconds(own_s, sum(ub[k:]), bw, cost.PER_UNIT_OVERHEAD_S * (len(ub) - k)))
            companion = ComponentPlan(
                name=cn.spec.name, role=cn.spec.role, params=cn.params, stored_bytes=sum(cn_facts.unit_bytes(stored)),
                placement="resident" if kc == len(cub) else "streamed", precision=q, compute_dtype=cn_compute,
                vram_bytes=cn_vram, resident_units=kc, total_units=len(cub), streamed_bytes=sum(cub[kc:]),
                activation_bytes=cn_act, calls_per_image=calls, weight_bytes=sum(cub),
                seconds_per_call=_call_seconds(cn_s, sum(cub[kc:]), bw, cost.PER_UNIT_OVERHEAD_S * (len(cub) - kc)),
                notes=f"runs in {spec.name}'s phase; {cn.source}" + (f"; {cn_note}" if cn_note else ""), matmul=cn_matmul)
            out.append(Option(plan, secs, vram + cn_vram + extra_weights + act, total, total_bytes=total + extra_weights,
                              compute_s=compute_s, overhead_s=overhead_s, streamed_bytes=streamed, companion=companion,
                              place_s=place))
    return out


def _kind(spec: ComponentSpec) -> str:
    """What a component computes like, for its efficiency: a ControlNet like its denoiser's kind."""
    if spec.role in ("denoiser", "controlnet"):
        return "transformer" if "Transformer" in spec.class_name or "Flux" in spec.class_name else "unet"
    return spec.role


def _call_seconds(compute_s: float, streamed: int, bw: float, overhead_s: float) -> float:
    """One call: copies of the streamed units hide behind compute (prefetch), plus per-unit overhead."""
    return max(compute_s, streamed / bw) + overhead_s + cost.PER_CALL_OVERHEAD_S


def _place_seconds(total: int, streamed: int, bw: float, mapped: bool = False, images_per_load: int = 1,
                   host: bool = False) -> float:
    """One image's share of putting a component in place before its first call.

    The resident part is copied to the GPU before the first call (runtime/streaming.py `apply`, no
    overlap with compute): from pageable host memory, or at `bw` (disk speed) from a file mapping. The
    streamed part held in RAM is first page-locked, once per load: the pinned copy replaces the pageable
    one and outlives evictions, so `images_per_load` images share it. Mapped weights are never pinned;
    they stream at disk speed in every call instead (the calls' cost, not placement). On a CPU machine
    (`host`) weights held in RAM are where they compute already: nothing to place, nothing pinned (mapped
    ones are still read from disk)."""
    resident = total - streamed
    if mapped:
        return resident / bw
    if host:
        return 0.0
    return resident / min(cost.PAGEABLE_H2D_BYTES_PER_S, bw) + streamed / cost.PIN_BYTES_PER_S / images_per_load


def _cpu_options(spec: ComponentSpec, flops: int, act16: int, machine: Machine, stored: str) -> list[Option]:
    """A GPU machine's component kept in host memory, computing on the CPU in its compute dtype (fp32:
    a widening of any 16-bit file). None on a CPU machine: there every option already runs there."""
    if machine.device == "cpu":
        return []
    facts = component_facts(spec)
    compute = cost.CPU_COMPUTE_DTYPE
    total = sum(facts.unit_bytes(compute))
    act = _activations(act16, compute)
    secs = flops / (machine.cpu_tflops * 1e12)
    plan = ComponentPlan(spec.name, spec.role, facts.params, sum(facts.unit_bytes(stored)), "cpu", compute, compute,
                         0, 0, len(facts.units), 0, act, "ram", secs, 1, "runs on the CPU", weight_bytes=total)
    return [Option(plan, secs, 0, total + act)]


def _denoiser_options(model: ModelSpec, spec: ComponentSpec, wl: Workload, machine: Machine, budget: int,
                      precisions: list[str], stored: str, file_ratio: float | None = None,
                      cn: PlannedControlNet | None = None, cn_precisions: list[str] = (), lora: int = 0,
                      simulate: Simulate = simulate_component) -> list[Option]:
    cfg = model.uses_cfg and wl.guidance
    modes = ("batch", "split") if cfg else ("none",)
    steps = max(1, round(wl.steps * spec.step_ratio))  # what generation runs (IF's stages II and III: fewer)
    out = []
    for mode in modes:
        batch = wl.batch * (2 if mode == "batch" else 1)
        calls = 2 if mode == "split" else 1
        req = SimRequest(batch=batch, width=wl.width, height=wl.height, dtype=_sim_dtype(machine))
        sim = simulate(model, spec, req)
        if cn is None:
            opts = _gpu_options(spec, calls, sim.flops, sim.activation_peak_bytes, machine, budget, precisions,
                                stored, steps, lora, file_ratio, wl.images_per_load)
        else:  # the ControlNet sees the same batch (the pipelines duplicate the control image for CFG)
            cn_sim = simulate(model, cn.spec, req)
            opts = _with_controlnet(spec, cn, calls, sim.flops, cn_sim.flops,
                                    _step_activation(model, cn, req, sim, cn_sim, simulate),
                                    cn_sim.activation_peak_bytes, machine, budget, precisions, list(cn_precisions),
                                    stored, steps, lora, file_ratio, wl.images_per_load)
        out += [replace(o, cfg_mode=mode) for o in opts]
    return out


def _step_activation(model: ModelSpec, cn: PlannedControlNet, req: SimRequest, sim, cn_sim,
                     simulate: Simulate = simulate_component) -> int:
    """The phase's activation peak: the ControlNet's call, then the denoiser's with its residuals alive,
    simulated as one step. A ControlNet whose residuals do not fit the catalogue's denoiser (a variant or
    scaled-down model planned as the catalogue's) cannot run that step; its two calls are composed."""
    if cn.pairs:
        return simulate(model, cn.spec, replace(req, op="step")).activation_peak_bytes
    return max(cn_sim.activation_peak_bytes, sim.activation_peak_bytes + cn_sim.output_bytes)


def _text_options(model: ModelSpec, spec: ComponentSpec, wl: Workload, machine: Machine, budget: int,
                  precisions: list[str], stored: str, file_ratio: float | None = None,
                  lora: int = 0, simulate: Simulate = simulate_component) -> list[Option]:
    # Prompt and negative prompt are encoded as two batch-1 calls; count both.
    calls = 2 if (model.uses_cfg and wl.guidance) else 1
    sim = simulate(model, spec, SimRequest(batch=wl.batch, width=wl.width, height=wl.height, dtype=_sim_dtype(machine)))
    opts = _gpu_options(spec, calls, sim.flops, sim.activation_peak_bytes, machine, budget, precisions, stored, 1,
                        lora, file_ratio, wl.images_per_load)
    return opts + _cpu_options(spec, sim.flops * calls, sim.activation_peak_bytes, machine, stored)


def _vae_options(model: ModelSpec, spec: ComponentSpec, wl: Workload, machine: Machine, budget: int,
                 precision: str, stored: str, encode: bool = False, lora: int = 0,
                 simulate: Simulate = simulate_component) -> list[Option]:
    """encode: the pipeline also VAE-encodes an image (img2img, or an InstantX Flux ControlNet's control image)."""
    out = []
    # diffusers' AutoencoderKL tiles cheaply to simulate; the Qwen-Image (3-D causal) VAE's tiled decode
    # takes minutes on fake tensors, so it is planned full-size (or on the CPU) for now.
    tiles = cost.VAE_TILES if spec.class_name == "AutoencoderKL" else ()
    dtype = _sim_dtype(machine)
    for tile in (0,) + tiles:
        if tile and tile >= max(wl.width, wl.height):
            continue
        sim = simulate(model, spec, SimRequest(op="decode", batch=wl.batch, width=wl.width, height=wl.height,
                                               dtype=dtype, vae_tile=tile))
        act, flops = sim.activation_peak_bytes, sim.flops
        if encode:
            enc = simulate(model, spec, SimRequest(op="encode", batch=wl.batch, width=wl.width,
                                                   height=wl.height, dtype=dtype, vae_tile=tile))
            act, flops = max(act, enc.activation_peak_bytes), flops + enc.flops
        # the VAE is small; streaming it is never better than tiling
        for o in _gpu_options(spec, 1, flops * (cost.VAE_TILE_OVERHEAD if tile else 1), act, machine, budget,
                              [precision], stored, 1, lora, images_per_load=wl.images_per_load,
                              resident_only=True):
            note = f"tiled decode, {tile}px tiles" if tile else "full decode"
            out.append(replace(o, vae_tile=tile, plan=replace(o.plan, notes=note)))
        if out:
            break  # the largest tile that fits is the fastest
    return out + _cpu_options(spec, flops, act, machine, stored)


def make_plan(model: ModelSpec, wl: Workload, machine: Machine, policy: Policy = Policy(),
              find_smallest: bool = True, file_weights: dict | None = None,
              simulate: Simulate = simulate_component) -> Plan:
    """The fastest feasible plan under the policy; `fits` False (with the reason) when none fits.

    find_smallest: when nothing fits, also search the smallest machine that would (a dozen more searches).
    file_weights: {component: (GGUF type, bytes per bf16 byte)} for components a file stores quantised.
    simulate: where the simulations come from (exact by default; the page's readout passes estimates,
    plan/estimated.py, and marks the plan so).
    """
    if policy.step_cache:  # an opt-in layer over the plan the policy would make without it
        from .step_cache import with_step_cache

        plain = make_plan(model, wl, machine, replace(policy, step_cache=0.0), find_smallest, file_weights, simulate)
        return with_step_cache(plain, model, policy.step_cache)
    from .interleave_choice import with_interleaving

    # which units of a streamed component stay resident, chosen once the placement is (plan/interleave.py)
    return with_interleaving(_make_plan(model, wl, machine, policy, find_smallest, file_weights, simulate), model,
                             simulate_more=simulate is simulate_component)


def _make_plan(model: ModelSpec, wl: Workload, machine: Machine, policy: Policy, find_smallest: bool,
               file_weights: dict | None, simulate: Simulate) -> Plan:
    # a CPU machine's budget is what the process leaves of RAM already (plan/machine.py cpu_machine)
    reserve = policy.reserve_bytes or (0 if machine.device == "cpu" else cost.DEFAULT_RESERVE_BYTES)
    cn = resolve_controlnet(model, wl)  # read once: every search below sizes the same ControlNet

    def smallest(quality: str) -> dict:
        return _smallest_fitting(model, wl, machine, quality, reserve, file_weights, cn, simulate) if find_smallest else {}

    if policy.quality == "balanced":
        # Lossy weights only when they are needed to fit, or make the whole image >= 1.3x faster.
        lossless = _search(model, wl, machine, "lossless", reserve, file_weights, cn, simulate)
        # fp8 matmuls quantise activations too (lossier than 8-bit storage) and their speed is a datasheet
        # estimate: the balanced policy's 8-bit weights are dequantised per layer (--quality fast takes them)
        lossy = replace(_search(model, wl, replace(machine, fp8=False), "fast", reserve, file_weights, cn, simulate),
                        machine=machine)
        if lossless.fits and (not lossy.fits or lossless.seconds_per_image < cost.BALANCED_MIN_SPEEDUP * lossy.seconds_per_image):
            return _balanced_keeps_lossless(lossless, lossy)
        if not lossy.fits:
            return replace(lossless, policy="balanced", smallest_fitting=smallest("fast"))
        why = ("lossless does not fit" if not lossless.fits else
               f"{lossless.seconds_per_image / lossy.seconds_per_image:.1f}x faster than lossless")
        alt = _plan_row("lossless plan", lossless, "does not fit" if not lossless.fits else
                        f"{lossless.seconds_per_image / lossy.seconds_per_image:.2f}x slower per image; the balanced "
                        f"policy takes 8-bit weights from {cost.BALANCED_MIN_SPEEDUP}x")
        return replace(lossy, policy="balanced", lossy_reason=f"8-bit weights: {why}",
                       decisions=lossy.decisions + (f"precision: 8-bit weights because {why}",),
                       rejected=lossy.rejected + (alt,))
    plan = _search(model, wl, machine, policy.quality, reserve, file_weights, cn, simulate)
    if plan.fits or policy.quality != "lossless":
        return plan if plan.fits else replace(plan, smallest_fitting=smallest(policy.quality))
    lossy = _search(model, wl, machine, "fast", reserve, file_weights, cn, simulate)
    reason = ("no lossless plan fits: " + plan.lossy_reason) if plan.lossy_reason else "no lossless plan fits"
    if lossy.fits:
        lossy_precisions = sorted({c.precision for c in lossy.components} - set(FLOAT_DTYPES))
        reason += (f"; the best lossy plan ({', '.join(lossy_precisions)} weights, --quality fast) fits at "
                   f"{lossy.seconds_per_step:.2f} s/step, peak {lossy.peak_vram_bytes / 2**30:.1f} GiB VRAM")
    return replace(plan, lossy_reason=reason,
                   rejected=plan.rejected + (_plan_row("best lossy plan", lossy, "lossy weights: the lossless policy "
                                                       "rules them out (--quality balanced or fast allows them)"),),
                   smallest_fitting=smallest("lossless"))


def _plan_row(alternative: str, p: Plan, reason: str) -> dict:
    """A whole plan the policy set aside, as a row of `rejected`."""
    return {"alternative": alternative, "fits": p.fits, "seconds_per_step": round(p.seconds_per_step, 3),
            "seconds_per_image": round(p.seconds_per_image, 3), "peak_vram_bytes": p.peak_vram_bytes,
            "peak_ram_bytes": p.peak_ram_bytes, "precisions": {c.name: c.precision for c in p.components},
            "reason": reason}


def _balanced_keeps_lossless(lossless: Plan, lossy: Plan) -> Plan:
    """The balanced policy's lossless plan; when 8-bit weights would have been faster (though not by the
    policy's margin), it says so: a bigger card can then plan slower than a smaller one that needed 8 bits."""
    plan = replace(lossless, policy="balanced")
    if not lossy.fits:
        return plan
    if not lossy.seconds_per_image < lossless.seconds_per_image * (1 - explain.NAMED_DIFFERENCE):
        return replace(plan, rejected=plan.rejected + (_plan_row("best 8-bit plan", lossy, "not faster per image"),))
    ratio = lossless.seconds_per_image / lossy.seconds_per_image
    line = (f"policy: lossless weights kept: the best 8-bit plan would be {ratio:.2f}x faster per image "
            f"({lossy.seconds_per_step:.2f} s/step, {lossy.seconds_per_image:.1f} s/image), less than the "
            f"{cost.BALANCED_MIN_SPEEDUP}x the balanced policy asks before lowering precision")
    row = _plan_row("best 8-bit plan", lossy, f"only {ratio:.2f}x faster per image; the balanced policy lowers "
                    f"precision from {cost.BALANCED_MIN_SPEEDUP}x")
    return replace(plan, decisions=plan.decisions + (line,), rejected=plan.rejected + (row,),
                   tradeoffs=plan.tradeoffs + (explain.POLICY,))


def _search(model: ModelSpec, wl: Workload, machine: Machine, quality: str, reserve: int,
            file_weights: dict | None = None, cn: PlannedControlNet | None = None,
            simulate: Simulate = simulate_component) -> Plan:
    budget = machine.vram_bytes - reserve
    per_component: list[list[Option]] = []
    rejected: list[dict] = []
    decisions: list[str] = []
    widened: list[str] = []
    failed: list[str] = []
    lora = _lora_bytes(wl)
    for spec in model.components:
        # weights kept bit-exact: the stored dtype, widened where the machine cannot compute in it
        stored = stored_dtype(model, spec, file_weights)
        lossless, why = lossless_dtype(spec, stored, machine)
        if why:
            widened.append(f"{spec.name}: {why}")
        precisions = _precisions(quality, lossless, machine)
        # weights a file already holds in a GGUF type are used as they are, under every policy
        qtype, ratio = file_quant(spec, file_weights)
        mine = [qtype] if qtype else precisions
        if spec.role == "denoiser":
            opts = _denoiser_options(model, spec, wl, machine, budget, mine, stored, ratio, cn, precisions, lora, simulate)
        elif spec.role == "text_encoder":
            opts = _text_options(model, spec, wl, machine, budget, mine, stored, ratio, lora, simulate)
        else:
            opts = _vae_options(model, spec, wl, machine, budget, lossless, stored,
                                wl.img2img or (cn is not None and cn.vae_encode), lora, simulate)
        if not opts:
            failed.append(spec.name)
            continue
        per_component.append(opts + [_disk_backed(o, machine) for o in opts])
    ram_budget = machine.ram_bytes - cost.BASELINE_RAM_BYTES
    chosen = _select(per_component, ram_budget) if not failed else []
    steps = max(wl.steps, 1)
    tradeoffs: list[str] = []
    for best, opts in zip(chosen, per_component):
        others = [o for o in opts if o is not best]
        left = ram_budget - sum(o.ram_bytes for o in chosen if o is not best)  # RAM the other choices leave
        line, lost_on_ram = explain.why_chosen(best, others, left, ram_budget)
        decisions.append(line)
        if lost_on_ram:
            tradeoffs.append(explain.RAM)
        trade = explain.placement_trade(best, opts, steps, wl.images_per_load) if best.plan.role == "denoiser" else ""
        if trade:
            decisions.append(trade)
            tradeoffs.append(explain.PLACEMENT)
        rejected += explain.rejected_rows(best, others, reserve, steps, left, ram_budget, wl.images_per_load)
    if chosen:
        decisions.append(explain.load_assumption(wl.images_per_load, host=machine.device == "cpu"))
    if chosen and widened:
        decisions += [f"precision: {w}" for w in widened if machine.device != "cpu"]
        if machine.device == "cpu":
            decisions.append(f"precision: runs on the CPU in {cost.CPU_COMPUTE_DTYPE} (bit-exact widening of the "
                             f"stored weights; bf16 on this kind of CPU is slower, plan/cost.py), weights counted at "
                             f"{cost.BYTES_PER_WEIGHT[cost.CPU_COMPUTE_DTYPE]} bytes")
    if lora and chosen:
        where = "read from the files" if wl.lora_bytes else f"{format_bytes(cost.LORA_BYTES)} each assumed: no files given"
        decisions.append(f"LoRA: {wl.loras} file{'s' if wl.loras > 1 else ''}, {format_bytes(lora)} of low-rank factors "
                         f"on the GPU through every phase ({where})")
    den = [o for o in chosen if o.plan.role == "denoiser"]
    sps = sum(explain.steady_seconds(o) for o in den) / steps if den else 0.0  # calls only: what s/step reports
    per_image = sum(o.seconds_per_image for o in chosen)
    peak_vram = max((o.vram_peak for o in chosen), default=0) + reserve
    peak_ram = _ram(chosen)
    fits = not failed and peak_vram <= machine.vram_bytes and peak_ram <= machine.ram_bytes
    reason = ""
    if failed:
        reason = f"{', '.join(failed)} cannot fit in {(machine.vram_bytes - reserve) / 2**30:.1f} GiB usable VRAM even streamed"
    elif peak_ram > machine.ram_bytes:
        reason = f"needs {peak_ram / 2**30:.1f} GiB RAM even with disk-backed weights"
    cfg_mode = next((o.cfg_mode for o in den), "none")
    vae_tile = next((o.vae_tile for o in chosen if o.plan.role == "vae"), 0)
    components = with_load_times(tuple(p for o in chosen for p in (o.plan, o.companion) if p is not None), machine)
    return with_compile_choice(Plan(model=model.name, policy=quality, fits=fits, workload=wl, machine=machine, components=components, attention="sdpa", attention_chunk=0, cfg_mode=cfg_mode,
                vae_tile=vae_tile, peak_vram_bytes=peak_vram, peak_ram_bytes=peak_ram, seconds_per_step=sps,
                seconds_per_image=per_image, reserve_bytes=reserve, decisions=tuple(decisions),
                rejected=tuple(rejected), lossy_reason=reason, tradeoffs=tuple(dict.fromkeys(tradeoffs))))


def _lora_bytes(wl: Workload) -> int:
    """All LoRAs' factors: from their files, else the documented default per LoRA."""
    return sum(wl.lora_bytes) if wl.lora_bytes else wl.loras * cost.LORA_BYTES


def _ram(chosen: list[Option]) -> int:
    return cost.BASELINE_RAM_BYTES + sum(o.ram_bytes for o in chosen)


def _disk_backed(o: Option, machine: Machine) -> Option:
    """The same option with weights memory-mapped from disk instead of held in RAM: no host copy,
    but every byte that moves (streamed per call, loaded per image) comes at disk speed."""
    p = o.plan
    bw = min(machine.disk_bytes_per_s, machine.link_bytes_per_s)
    note = (p.notes + "; " if p.notes else "") + "disk-backed weights"
    if p.placement == "cpu":
        per_call = p.seconds_per_call + p.stored_bytes / machine.disk_bytes_per_s
        secs, ram = per_call, p.activation_bytes
        place = 0.0
    elif o.unit_bytes:  # its own resident prefix: from disk, fewer resident units may place faster
        extra = o.total_bytes - o.ram_bytes  # LoRA factors
        r = _residency(list(o.unit_bytes), o.weight_budget, o.compute_s, p.calls_per_image, bw, extra, mapped=True,
                       resident_only=p.placement == "resident" and p.role == "vae")
        # on a GPU, units streamed from the file mapping pass through pinned staging buffers (runtime/buffers.py)
        staging = STAGING_BUFFERS * max(o.unit_bytes[r.k:]) if r.k < len(o.unit_bytes) and machine.device != "cpu" else 0
        return replace(o, ram_bytes=staging, seconds_per_image=r.seconds_per_image, place_s=r.place_s,
                       vram_peak=o.vram_peak - p.vram_bytes + r.vram, streamed_bytes=r.streamed, overhead_s=r.overhead_s,
                       plan=replace(p, source="disk", seconds_per_call=r.per_call_s, notes=note, vram_bytes=r.vram,
                                    resident_units=r.k, streamed_bytes=r.streamed,
                                    placement="resident" if r.k == p.total_units else "streamed"))
    else:
        per_call = _call_seconds(o.compute_s, o.streamed_bytes, bw, o.overhead_s)
        place = _place_seconds(o.total_bytes, o.streamed_bytes, bw, mapped=True)
        secs = place + max(p.calls_per_image, 1) * per_call
        ram = 0
    companion = replace(o.companion, source="disk") if o.companion else None
    return replace(o, ram_bytes=ram, seconds_per_image=secs, companion=companion, place_s=place,
                   plan=replace(p, source="disk", seconds_per_call=per_call, notes=note))


def _select(per_component: list[list[Option]], ram_budget: int) -> list[Option]:
    """One option per component: the fastest combination whose host copies fit in RAM.

    Usually the fastest option of each fits and we are done; otherwise an exact knapsack over RAM: the
    combinations that are fastest for the RAM they take (a Pareto front, in bytes — rounding RAM to
    buckets lost combinations that fit, so a bigger card could plan slower), extended one component at
    a time (components are few, options a few dozen).
    """
    # ties (a VAE whose load hides behind its compute) go to weights held in RAM, not memory-mapped
    fastest = [min(opts, key=lambda o: (o.seconds_per_image, o.vram_peak, o.plan.source == "disk")) for opts in per_component]
    if sum(o.ram_bytes for o in fastest) <= ram_budget:
        return fastest
    front: list[tuple[int, float, tuple[Option, ...]]] = [(0, 0.0, ())]  # (RAM, time, picks): RAM up, time down
    for opts in per_component:
        grown = sorted(((ram + o.ram_bytes, t + o.seconds_per_image, picks + (o,)) for ram, t, picks in front
                        for o in opts if ram + o.ram_bytes <= ram_budget), key=lambda c: (c[0], c[1]))
        front = []
        for c in grown:
            if not front or c[1] < front[-1][1]:  # drop combinations that take more RAM and are not faster
                front.append(c)
        if not front:  # nothing fits RAM: take the least-RAM combination (the plan reports it does not fit)
            return [min(opts, key=lambda o: (o.ram_bytes, o.seconds_per_image)) for opts in per_component]
    return list(front[-1][2])


VRAM_TIERS_GIB = (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 80, 96, 141)
RAM_TIERS_GIB = (8, 16, 32, 48, 64, 96, 128, 192, 256)


def _smallest_fitting(model: ModelSpec, wl: Workload, machine: Machine, quality: str, reserve: int,
                      file_weights: dict | None = None, cn: PlannedControlNet | None = None,
                      simulate: Simulate = simulate_component) -> dict:
    """Smallest VRAM tier that fits with this RAM, else with the smallest larger RAM tier that allows one.
    More VRAM never hurts a plan, so each RAM level is a binary search over the VRAM tiers."""
    def fits(v: int, ram: int) -> bool:
        return _search(model, wl, replace(machine, vram_bytes=v * 2**30, ram_bytes=ram), quality, reserve, file_weights, cn,
                       simulate).fits

    rams = [machine.ram_bytes] + [r * 2**30 for r in RAM_TIERS_GIB if r * 2**30 > machine.ram_bytes]
    for ram in rams:
        tiers = [v for v in VRAM_TIERS_GIB if ram != machine.ram_bytes or v * 2**30 > machine.vram_bytes]
        if not tiers or not fits(tiers[-1], ram):
            continue
        lo, hi = 0, len(tiers) - 1  # tiers[hi] fits
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(tiers[mid], ram):
                hi = mid
            else:
                lo = mid + 1
        return {"vram_bytes": tiers[hi] * 2**30, "ram_bytes": ram}
    return {}
