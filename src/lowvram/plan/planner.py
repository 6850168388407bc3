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

from ..catalogue import ComponentSpec, ModelSpec
from ..simulate import SimRequest, simulate_component
from ..units import format_bytes
from . import cost
from .controlnet import PlannedControlNet, resolve_controlnet
from .dtypes import FLOAT_DTYPES, file_quant, half_dtype, lossless_dtype, stored_dtype
from .facts import ComponentFacts, component_facts
from .types import ComponentPlan, Machine, Plan, Policy, Workload


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


def _sim_dtype(compute: str) -> str:
    """The dtype simulations run in: 16 bits always (fp32 is scaled from them, cost.FP32_ACTIVATION_SCALE)."""
    return "bf16" if compute == "fp32" else compute


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


def _compute_seconds(flops: int, machine: Machine, overhead: float, kind: str, compute: str = "bf16") -> float:
    """`kind` (transformer / unet / vae / text_encoder) picks a measured efficiency where there is one; a
    GPU computing in fp32 runs at cost.FP32_GPU_RATE of its tensor rate (a CPU's figure is fp32 already)."""
    rate = machine.tflops * 1e12 * cost.compute_efficiency(machine.arch, kind)
    if compute == "fp32" and machine.device != "cpu":
        rate *= cost.FP32_GPU_RATE
    return flops / rate * (1 + overhead)


def _prefix_vram(unit_bytes: list[int], k: int) -> int:
    """VRAM of a component with its first k units resident and the rest streamed through two buffers."""
    rest = unit_bytes[k:]
    return sum(unit_bytes[:k]) + (2 * max(rest) if rest else 0)


def _gpu_options(spec: ComponentSpec, role_calls: int, flops: int, act16: int, machine: Machine, budget: int,
                 precisions: list[str], stored: str, per_image_calls: int,
                 extra_weights: int = 0, file_ratio: float | None = None) -> list[Option]:
    """Resident / streamed options on the device for one component.

    act16: the simulated (16-bit) activation peak of one call; stored: the dtype the weights are stored in.
    role_calls: forward calls per step (2 with split CFG); per_image_calls: steps (denoiser) or 1.
    extra_weights: LoRA factors, on the GPU beside the component for its whole phase (not its own weights).
    """
    facts = component_facts(spec)
    out = []
    for p in precisions:
        compute = _compute_for(p, machine)
        act = _activations(act16, compute)
        ub, overhead = _unit_bytes(facts, p, compute, file_ratio)
        fit = _fit_units(ub, budget - act - extra_weights)
        if fit is None:
            continue
        k, vram = fit
        total = sum(ub)
        streamed = sum(ub[k:])
        compute_s = _compute_seconds(flops, machine, overhead, _kind(spec), compute)
        overhead_s = cost.PER_UNIT_OVERHEAD_S * (len(ub) - k)
        per_call = _call_seconds(compute_s, streamed, machine.link_bytes_per_s, overhead_s)
        per_image = _image_seconds(compute_s, overhead_s, total + extra_weights, streamed, role_calls * per_image_calls,
                                   machine.link_bytes_per_s, host=machine.device == "cpu")
        placement = "resident" if k == len(ub) else "streamed"
        plan = ComponentPlan(
            name=spec.name, role=spec.role, params=facts.params, stored_bytes=sum(facts.unit_bytes(stored)),
            placement=placement, precision=p, compute_dtype=compute, vram_bytes=vram, resident_units=k,
            total_units=len(ub), streamed_bytes=streamed, activation_bytes=act, seconds_per_call=per_call,
            calls_per_image=role_calls * per_image_calls, weight_bytes=total)
        # RAM: a pinned host copy of the whole component — what is streamed, and what is reloaded for
        # the next image after the phase evicts it.
        out.append(Option(plan, per_image, vram + extra_weights + act, total, total_bytes=total + extra_weights,
                          compute_s=compute_s, overhead_s=overhead_s, streamed_bytes=streamed))
    return out


def _with_controlnet(spec: ComponentSpec, cn: PlannedControlNet, role_calls: int, flops: int, cn_flops: int, act16: int,
                     cn_act16: int, machine: Machine, budget: int, precisions: list[str], cn_precisions: list[str],
                     stored: str, steps: int, extra_weights: int = 0,
                     file_ratio: float | None = None) -> list[Option]:
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
        for q in cn_precisions:
            cn_compute = _compute_for(q, machine)
            # the phase's peak is in the wider of the two dtypes
            act = _activations(act16, "fp32" if "fp32" in (compute, cn_compute) else compute)
            cn_act = _activations(cn_act16, cn_compute)
            cub, cn_overhead = _unit_bytes(cn_facts, q, cn_compute, None)
            compute_s = (_compute_seconds(flops, machine, overhead, _kind(spec), compute)
                         + _compute_seconds(cn_flops, machine, cn_overhead, _kind(cn.spec), cn_compute))
            total = sum(ub) + sum(cub)
            best = None
            for kc in range(len(cub), -1, -1):
                cn_vram = _prefix_vram(cub, kc)
                fit = _fit_units(ub, budget - act - extra_weights - cn_vram)
                if fit is None:
                    continue
                k, vram = fit
                streamed = sum(ub[k:]) + sum(cub[kc:])
                # per streamed unit, plus the ControlNet's own forward call each step
                overhead_s = cost.PER_UNIT_OVERHEAD_S * (len(ub) - k + len(cub) - kc) + cost.PER_CALL_OVERHEAD_S
                secs = _image_seconds(compute_s, overhead_s, total + extra_weights, streamed, calls, bw,
                                      host=machine.device == "cpu")
                if best is None or (secs, vram + cn_vram) < (best[0], best[2] + best[4]):
                    best = (secs, k, vram, kc, cn_vram, streamed, overhead_s)
            if best is None:
                continue
            secs, k, vram, kc, cn_vram, streamed, overhead_s = best
            own_s = _compute_seconds(flops, machine, overhead, _kind(spec), compute)
            cn_s = compute_s - own_s
            plan = ComponentPlan(
                name=spec.name, role=spec.role, params=facts.params, stored_bytes=sum(facts.unit_bytes(stored)),
                placement="resident" if k == len(ub) else "streamed", precision=p, compute_dtype=compute,
                vram_bytes=vram, resident_units=k, total_units=len(ub), streamed_bytes=sum(ub[k:]),
                activation_bytes=act, calls_per_image=calls, weight_bytes=sum(ub),
                seconds_per_call=_call_seconds(own_s, sum(ub[k:]), bw, cost.PER_UNIT_OVERHEAD_S * (len(ub) - k)))
            companion = ComponentPlan(
                name=cn.spec.name, role=cn.spec.role, params=cn.params, stored_bytes=sum(cn_facts.unit_bytes(stored)),
                placement="resident" if kc == len(cub) else "streamed", precision=q, compute_dtype=cn_compute,
                vram_bytes=cn_vram, resident_units=kc, total_units=len(cub), streamed_bytes=sum(cub[kc:]),
                activation_bytes=cn_act, calls_per_image=calls, weight_bytes=sum(cub),
                seconds_per_call=_call_seconds(cn_s, sum(cub[kc:]), bw, cost.PER_UNIT_OVERHEAD_S * (len(cub) - kc)),
                notes=f"runs in {spec.name}'s phase; {cn.source}")
            out.append(Option(plan, secs, vram + cn_vram + extra_weights + act, total, total_bytes=total + extra_weights,
                              compute_s=compute_s, overhead_s=overhead_s, streamed_bytes=streamed, companion=companion))
    return out


def _kind(spec: ComponentSpec) -> str:
    """What a component computes like, for its efficiency: a ControlNet like its denoiser's kind."""
    if spec.role in ("denoiser", "controlnet"):
        return "transformer" if "Transformer" in spec.class_name or "Flux" in spec.class_name else "unet"
    return spec.role


def _call_seconds(compute_s: float, streamed: int, bw: float, overhead_s: float) -> float:
    """One call: copies of the streamed units hide behind compute (prefetch), plus per-unit overhead."""
    return max(compute_s, streamed / bw) + overhead_s + cost.PER_CALL_OVERHEAD_S


def _image_seconds(compute_s: float, overhead_s: float, total: int, streamed: int, calls: int, bw: float,
                   mapped: bool = False, host: bool = False) -> float:
    """All calls of one image. From RAM: the component is placed first — its resident part copied from
    pageable host memory, its streamed part pinned once — then every call streams the streamed part
    behind its compute. From a file mapping (`mapped`, bw = disk speed): nothing is pinned, and every
    byte comes at disk speed during the first call, the rest's calls stream only the streamed part."""
    if mapped:
        first = max(compute_s, total / bw) + overhead_s + cost.PER_CALL_OVERHEAD_S
        return first + max(calls - 1, 0) * _call_seconds(compute_s, streamed, bw, overhead_s)
    # on a CPU machine the weights are where they compute already: nothing to place, nothing pinned
    place = 0.0 if host else (total - streamed) / min(cost.PAGEABLE_H2D_BYTES_PER_S, bw) + streamed / cost.PIN_BYTES_PER_S
    return place + max(calls, 1) * _call_seconds(compute_s, streamed, bw, overhead_s)


def _steady_seconds(o: Option, machine: Machine) -> float:
    """A denoiser's share of an image without placing it (what every step costs once it is placed): the
    figure `s/step` reports."""
    p = o.plan
    if p.placement == "cpu":
        return o.seconds_per_image
    bw = min(machine.disk_bytes_per_s, machine.link_bytes_per_s) if p.source == "disk" else machine.link_bytes_per_s
    return _call_seconds(o.compute_s, o.streamed_bytes, bw, o.overhead_s) * p.calls_per_image


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
                      cn: PlannedControlNet | None = None, cn_precisions: list[str] = (), lora: int = 0) -> list[Option]:
    cfg = model.uses_cfg and wl.guidance
    modes = ("batch", "split") if cfg else ("none",)
    steps = max(1, round(wl.steps * spec.step_ratio))  # what generation runs (IF's stages II and III: fewer)
    out = []
    for mode in modes:
        batch = wl.batch * (2 if mode == "batch" else 1)
        calls = 2 if mode == "split" else 1
        req = SimRequest(batch=batch, width=wl.width, height=wl.height, dtype=_sim_dtype(half_dtype(machine)))
        sim = simulate_component(model, spec, req)
        if cn is None:
            opts = _gpu_options(spec, calls, sim.flops, sim.activation_peak_bytes, machine, budget, precisions,
                                stored, steps, lora, file_ratio)
        else:  # the ControlNet sees the same batch (the pipelines duplicate the control image for CFG)
            cn_sim = simulate_component(model, cn.spec, req)
            opts = _with_controlnet(spec, cn, calls, sim.flops, cn_sim.flops, _step_activation(model, cn, req, sim, cn_sim),
                                    cn_sim.activation_peak_bytes, machine, budget, precisions, list(cn_precisions),
                                    stored, steps, lora, file_ratio)
        out += [replace(o, cfg_mode=mode) for o in opts]
    return out


def _step_activation(model: ModelSpec, cn: PlannedControlNet, req: SimRequest, sim, cn_sim) -> int:
    """The phase's activation peak: the ControlNet's call, then the denoiser's with its residuals alive,
    simulated as one step. A ControlNet whose residuals do not fit the catalogue's denoiser (a variant or
    scaled-down model planned as the catalogue's) cannot run that step; its two calls are composed."""
    if cn.pairs:
        return simulate_component(model, cn.spec, replace(req, op="step")).activation_peak_bytes
    return max(cn_sim.activation_peak_bytes, sim.activation_peak_bytes + cn_sim.output_bytes)


def _text_options(model: ModelSpec, spec: ComponentSpec, wl: Workload, machine: Machine, budget: int,
                  precisions: list[str], stored: str, file_ratio: float | None = None,
                  lora: int = 0) -> list[Option]:
    # Prompt and negative prompt are encoded as two batch-1 calls; count both.
    calls = 2 if (model.uses_cfg and wl.guidance) else 1
    sim = simulate_component(model, spec, SimRequest(batch=wl.batch, width=wl.width, height=wl.height,
                                                     dtype=_sim_dtype(half_dtype(machine))))
    opts = _gpu_options(spec, calls, sim.flops, sim.activation_peak_bytes, machine, budget, precisions, stored, 1,
                        lora, file_ratio)
    return opts + _cpu_options(spec, sim.flops * calls, sim.activation_peak_bytes, machine, stored)


def _vae_options(model: ModelSpec, spec: ComponentSpec, wl: Workload, machine: Machine, budget: int,
                 precision: str, stored: str, encode: bool = False, lora: int = 0) -> list[Option]:
    """encode: the pipeline also VAE-encodes an image (img2img, or an InstantX Flux ControlNet's control image)."""
    out = []
    # diffusers' AutoencoderKL tiles cheaply to simulate; the Qwen-Image (3-D causal) VAE's tiled decode
    # takes minutes on fake tensors, so it is planned full-size (or on the CPU) for now.
    tiles = cost.VAE_TILES if spec.class_name == "AutoencoderKL" else ()
    for tile in (0,) + tiles:
        if tile and tile >= max(wl.width, wl.height):
            continue
        dtype = _sim_dtype(half_dtype(machine))
        sim = simulate_component(model, spec, SimRequest(op="decode", batch=wl.batch, width=wl.width, height=wl.height,
                                                         dtype=dtype, vae_tile=tile))
        act, flops = sim.activation_peak_bytes, sim.flops
        if encode:
            enc = simulate_component(model, spec, SimRequest(op="encode", batch=wl.batch, width=wl.width,
                                                             height=wl.height, dtype=dtype, vae_tile=tile))
            act, flops = max(act, enc.activation_peak_bytes), flops + enc.flops
        for o in _gpu_options(spec, 1, flops * (cost.VAE_TILE_OVERHEAD if tile else 1), act, machine, budget,
                              [precision], stored, 1, lora):
            if o.plan.placement != "resident":
                continue  # the VAE is small; streaming it is never better than tiling
            note = f"tiled decode, {tile}px tiles" if tile else "full decode"
            out.append(replace(o, vae_tile=tile, plan=replace(o.plan, notes=note)))
        if out:
            break  # the largest tile that fits is the fastest
    return out + _cpu_options(spec, flops, act, machine, stored)


def make_plan(model: ModelSpec, wl: Workload, machine: Machine, policy: Policy = Policy(),
              find_smallest: bool = True, file_weights: dict | None = None) -> Plan:
    """The fastest feasible plan under the policy; `fits` False (with the reason) when none fits.

    find_smallest: when nothing fits, also search the smallest machine that would (a dozen more searches).
    file_weights: {component: (GGUF type, bytes per bf16 byte)} for components a file stores quantised.
    """
    # a CPU machine's budget is what the process leaves of RAM already (plan/machine.py cpu_machine)
    reserve = policy.reserve_bytes or (0 if machine.device == "cpu" else cost.DEFAULT_RESERVE_BYTES)
    cn = resolve_controlnet(model, wl)  # read once: every search below sizes the same ControlNet

    def smallest(quality: str) -> dict:
        return _smallest_fitting(model, wl, machine, quality, reserve, file_weights, cn) if find_smallest else {}

    if policy.quality == "balanced":
        # Lossy weights only when they are needed to fit, or make the whole image >= 1.3x faster.
        lossless = _search(model, wl, machine, "lossless", reserve, file_weights, cn)
        lossy = _search(model, wl, machine, "fast", reserve, file_weights, cn)
        if lossless.fits and (not lossy.fits or lossless.seconds_per_image < cost.BALANCED_MIN_SPEEDUP * lossy.seconds_per_image):
            return replace(lossless, policy="balanced")
        if not lossy.fits:
            return replace(lossless, policy="balanced", smallest_fitting=smallest("fast"))
        why = ("lossless does not fit" if not lossless.fits else
               f"{lossless.seconds_per_image / lossy.seconds_per_image:.1f}x faster than lossless")
        return replace(lossy, policy="balanced", lossy_reason=f"8-bit weights: {why}",
                       decisions=lossy.decisions + (f"precision: 8-bit weights because {why}",))
    plan = _search(model, wl, machine, policy.quality, reserve, file_weights, cn)
    if plan.fits or policy.quality != "lossless":
        return plan if plan.fits else replace(plan, smallest_fitting=smallest(policy.quality))
    lossy = _search(model, wl, machine, "fast", reserve, file_weights, cn)
    reason = ("no lossless plan fits: " + plan.lossy_reason) if plan.lossy_reason else "no lossless plan fits"
    if lossy.fits:
        lossy_precisions = sorted({c.precision for c in lossy.components} - set(FLOAT_DTYPES))
        reason += (f"; the best lossy plan ({', '.join(lossy_precisions)} weights, --quality fast) fits at "
                   f"{lossy.seconds_per_step:.2f} s/step, peak {lossy.peak_vram_bytes / 2**30:.1f} GiB VRAM")
    return replace(plan, lossy_reason=reason,
                   rejected=plan.rejected + ({"alternative": "best lossy plan", "fits": lossy.fits,
                                              "seconds_per_step": lossy.seconds_per_step,
                                              "peak_vram_bytes": lossy.peak_vram_bytes,
                                              "precisions": {c.name: c.precision for c in lossy.components}},),
                   smallest_fitting=smallest("lossless"))


def _search(model: ModelSpec, wl: Workload, machine: Machine, quality: str, reserve: int,
            file_weights: dict | None = None, cn: PlannedControlNet | None = None) -> Plan:
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
            opts = _denoiser_options(model, spec, wl, machine, budget, mine, stored, ratio, cn, precisions, lora)
        elif spec.role == "text_encoder":
            opts = _text_options(model, spec, wl, machine, budget, mine, stored, ratio, lora)
        else:
            opts = _vae_options(model, spec, wl, machine, budget, lossless, stored,
                                wl.img2img or (cn is not None and cn.vae_encode), lora)
        if not opts:
            failed.append(spec.name)
            continue
        per_component.append(opts + [_disk_backed(o, machine) for o in opts])
    chosen = _select(per_component, machine.ram_bytes - cost.BASELINE_RAM_BYTES) if not failed else []
    for best, opts in zip(chosen, per_component):
        others = [o for o in opts if o is not best]
        decisions.append(_why(best, others))
        rejected += [{"component": o.plan.name, "placement": o.plan.placement, "precision": o.plan.precision,
                      "source": o.plan.source, "cfg_mode": o.cfg_mode, "vae_tile": o.vae_tile,
                      "seconds_per_image": round(o.seconds_per_image, 3), "vram_bytes": o.vram_peak + reserve,
                      "ram_bytes": o.ram_bytes,
                      **({"controlnet": f"{o.companion.placement} {o.companion.resident_units}/{o.companion.total_units} "
                                        f"{o.companion.precision}"} if o.companion else {})} for o in others]
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
    steps = max(wl.steps, 1)
    sps = sum(_steady_seconds(o, machine) for o in den) / steps if den else 0.0
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
    components = tuple(p for o in chosen for p in (o.plan, o.companion) if p is not None)
    return Plan(model=model.name, policy=quality, fits=fits, workload=wl, machine=machine, components=components, attention="sdpa", attention_chunk=0, cfg_mode=cfg_mode,
                vae_tile=vae_tile, peak_vram_bytes=peak_vram, peak_ram_bytes=peak_ram, seconds_per_step=sps,
                seconds_per_image=per_image, reserve_bytes=reserve, decisions=tuple(decisions),
                rejected=tuple(rejected), lossy_reason=reason)


def _lora_bytes(wl: Workload) -> int:
    """All LoRAs' factors: from their files, else the documented default per LoRA."""
    return sum(wl.lora_bytes) if wl.lora_bytes else wl.loras * cost.LORA_BYTES


def _ram(chosen: list[Option]) -> int:
    return cost.BASELINE_RAM_BYTES + sum(o.ram_bytes for o in chosen)


RAM_BUCKET = 256 * 2**20  # granularity of the RAM knapsack; each option's RAM is rounded up to it


def _disk_backed(o: Option, machine: Machine) -> Option:
    """The same option with weights memory-mapped from disk instead of held in RAM: no host copy,
    but every byte that moves (streamed per call, loaded per image) comes at disk speed."""
    p = o.plan
    bw = min(machine.disk_bytes_per_s, machine.link_bytes_per_s)
    if p.placement == "cpu":
        per_call = p.seconds_per_call + p.stored_bytes / machine.disk_bytes_per_s
        secs, ram = per_call, p.activation_bytes
    else:
        per_call = _call_seconds(o.compute_s, o.streamed_bytes, bw, o.overhead_s)
        secs = _image_seconds(o.compute_s, o.overhead_s, o.total_bytes, o.streamed_bytes, p.calls_per_image, bw,
                              mapped=True)
        ram = 0
    note = (p.notes + "; " if p.notes else "") + "disk-backed weights"
    companion = replace(o.companion, source="disk") if o.companion else None
    return replace(o, ram_bytes=ram, seconds_per_image=secs, companion=companion,
                   plan=replace(p, source="disk", seconds_per_call=per_call, notes=note))


def _select(per_component: list[list[Option]], ram_budget: int) -> list[Option]:
    """One option per component: the fastest combination whose host copies fit in RAM.

    Usually the fastest option of each fits and we are done; otherwise a knapsack over RAM buckets
    (components are few, options a few dozen) finds the fastest combination that fits.
    """
    # ties (a VAE whose load hides behind its compute) go to weights held in RAM, not memory-mapped
    fastest = [min(opts, key=lambda o: (o.seconds_per_image, o.vram_peak, o.plan.source == "disk")) for opts in per_component]
    if sum(o.ram_bytes for o in fastest) <= ram_budget:
        return fastest
    cap = max(0, ram_budget // RAM_BUCKET)
    # best[r] = (time, choices) using r buckets at most
    best: dict[int, tuple[float, tuple[Option, ...]]] = {0: (0.0, ())}
    for opts in per_component:
        nxt: dict[int, tuple[float, tuple[Option, ...]]] = {}
        for used, (t, picks) in best.items():
            for o in opts:
                r = used + -(-o.ram_bytes // RAM_BUCKET)
                if r > cap:
                    continue
                cand = (t + o.seconds_per_image, picks + (o,))
                if r not in nxt or cand[0] < nxt[r][0]:
                    nxt[r] = cand
        # drop dominated states: more RAM and not faster
        best, fastest_so_far = {}, float("inf")
        for r in sorted(nxt):
            if nxt[r][0] < fastest_so_far:
                best[r] = nxt[r]
                fastest_so_far = nxt[r][0]
        if not best:
            break
    if not best:  # nothing fits RAM: take the least-RAM combination (the plan reports it does not fit)
        return [min(opts, key=lambda o: (o.ram_bytes, o.seconds_per_image)) for opts in per_component]
    return list(min(best.values(), key=lambda v: v[0])[1])


def _why(best: Option, others: list[Option]) -> str:
    p = best.plan
    if p.placement == "resident":
        what = f"resident in {p.precision}"
    elif p.placement == "streamed":
        what = (f"streamed in {p.precision}, first {p.resident_units}/{p.total_units} units resident, "
                f"{p.streamed_bytes / 2**30:.1f} GiB copied per call")
    else:
        what = "on the CPU"
    faster = [o for o in others if o.seconds_per_image < best.seconds_per_image]
    if p.placement == "cpu":
        why = "no GPU option fits" if not [o for o in others if o.plan.placement != "cpu"] else "faster than loading it"
    elif faster:
        why = "the faster options need more RAM than the other components leave"
    elif p.placement == "streamed":
        why = "the whole component does not fit next to its activations; partial residency fills the budget"
    else:
        why = "fits with its activations"
    extra = ""
    if best.cfg_mode != "none":
        extra = f"; CFG as {'one batch of 2' if best.cfg_mode == 'batch' else 'two batches of 1'}"
    if p.notes:
        extra += f"; {p.notes}"
    c = best.companion
    if c is not None:
        extra += (f"; ControlNet beside it, {c.placement}" + (f" {c.resident_units}/{c.total_units} units" if c.placement ==
                  "streamed" else "") + f" in {c.precision} ({format_bytes(c.vram_bytes)} weights, its call "
                  f"{format_bytes(c.activation_bytes)} activations)")
    return f"{p.name}: {what} ({why}){extra}"


VRAM_TIERS_GIB = (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 80, 96, 141)
RAM_TIERS_GIB = (8, 16, 32, 48, 64, 96, 128, 192, 256)


def _smallest_fitting(model: ModelSpec, wl: Workload, machine: Machine, quality: str, reserve: int,
                      file_weights: dict | None = None, cn: PlannedControlNet | None = None) -> dict:
    """Smallest VRAM tier that fits with this RAM, else with the smallest larger RAM tier that allows one.
    More VRAM never hurts a plan, so each RAM level is a binary search over the VRAM tiers."""
    def fits(v: int, ram: int) -> bool:
        return _search(model, wl, replace(machine, vram_bytes=v * 2**30, ram_bytes=ram), quality, reserve, file_weights, cn).fits

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
