"""Issue #13 items 1-2 (and 3a with --compile): what the runtime costs over the plain model.

For one denoiser (real-size SDXL UNet fp16 1024² batch 2 / FLUX.1-dev transformer bf16 1024², random
weights built on the device by bench/random_models.py; tiny configs on the CPU with --tiny), rows:
- unconstrained: the plain module, no lowvram;
- all resident, executor: PlanExecutor with an all-resident plan (item 1: no hook left once placed);
- all resident, executor, hook kept: the same with the activation hook kept on every call (before #13);
- streamed at each budget, wrap-around prefetch on and off (item 2), host copies pinned; and with the
  resident units spread among the streamed ones as the planner now chooses (plan/interleave.py), beside
  the first-K prefix, each row with its predicted call on the copy timeline (timeline ms);
- streamed at the smallest budget from pageable host memory, through the staging buffers and direct;
- streamed at the smallest budget pinned tensor by tensor, as before issue #13's one-transfer layout
  (each tensor its own copy, pinned through torch's power-of-two rounding allocator): the transfers per
  call and the host RAM the pinning added (RSS) beside the laid-out rows';
- with --compile: the all-resident and smallest-budget rows with the repeated blocks compiled (3a),
  and the first call's extra seconds (the compile).
On the CPU every mode runs interleaved with the unconstrained one (A/B/A/B, median of --steps calls each),
so a busy machine's drift hits both; on a GPU the unconstrained module is timed first and then becomes
the one lowvram runs (two copies of Flux would not leave the budgets to measure). Prints a markdown table (s/step, x unconstrained, x physical limit, peak GiB,
max abs diff vs unconstrained, per-call stream stats) and writes JSON.

    python bench/gpu_streaming.py --json out.json                          # CUDA: SDXL (bench/gpu_session.sh's 60-s part)
    python bench/gpu_streaming.py --models sdxl,flux-dev --compile --json out.json   # CUDA, a longer session
    python bench/gpu_streaming.py --models sd35-large --json out.json      # CUDA: the three-buffer rows
    python bench/gpu_streaming.py --tiny --steps 40 --threads 1 --json out.json     # CPU: dry run / CPU figures

The JSON ({"device", "bandwidth", "rows"}) is rewritten after every row, whole (a temporary file renamed),
so a run cut short by its time limit keeps the rows measured so far.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import time

import psutil
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lowvram.catalogue import MODELS  # noqa: E402
from lowvram.contract import ComponentPlan, Machine, Plan, Workload  # noqa: E402
from lowvram.kernels.dtypes import COMPUTE_DTYPES  # noqa: E402
from lowvram.plan import cost  # noqa: E402
from lowvram.plan.interleave import call_seconds, interleave as spread_units, vram_bytes  # noqa: E402
from lowvram.plan.planner import _fit_units  # noqa: E402
from lowvram.runtime.accountant import BudgetAccountant  # noqa: E402
from lowvram.runtime.executor import PlanExecutor  # noqa: E402
from lowvram.runtime.regional_compile import apply_regional_compile  # noqa: E402
from lowvram.runtime.streaming import StreamingEngine, StreamStats  # noqa: E402
from lowvram.simulate import SimRequest, simulate_component  # noqa: E402
from lowvram.simulate.run import build_inputs  # noqa: E402
from lowvram.simulate.unit_compute import unit_compute_uncached  # noqa: E402
from lowvram.structure import split_parents, streamable_units  # noqa: E402
from random_models import build_random, pinned_bandwidth  # noqa: E402

GiB = 2**30
# model: (component, dtype, batch, budgets in GiB) — issue #13's targets: SDXL at 4 GiB, Flux at 8 and 12; and
# SD3.5-Large (CFG as one batch of 2) at 8 and 12, where the planner streams through three buffers
CASES = {"sdxl": ("unet", "fp16", 2, (4,)), "flux-dev": ("transformer", "bf16", 1, (8, 12)),
         "sd35-large": ("transformer", "bf16", 2, (8, 12))}
TINY_FALLBACK = {"sd35-large-transformer": "sd3-medium-transformer"}  # tests/fixtures/tiny.py has SD3's
MARGIN = cost.DEFAULT_RESERVE_BYTES  # kept out of the weight budget, as the planner does


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _out(o):
    if isinstance(o, (tuple, list)):
        return o[0]
    return getattr(o, "sample", o)


def timed(fn, kw, device) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = _out(fn(**kw))
    sync(device)
    return time.perf_counter() - t0, out


def ab(fn, kw, device, steps: int, plain_kw=None, plain_fn=None) -> tuple[float, float, torch.Tensor, float, float]:
    """Median seconds of `fn` and of the plain module, calls interleaved, and the median of the paired
    differences (each call minus the plain call right after it: robust to a busy machine's drift); the
    first call's seconds too (it records the unit order, and compiles when asked)."""
    with torch.no_grad():
        first, out = timed(fn, kw, device)
        ts, base = [], []
        for _ in range(steps):
            t, out = timed(fn, kw, device)
            ts.append(t)
            if plain_fn is not None:
                base.append(timed(plain_fn, plain_kw, device)[0])
    diff = statistics.median(t - b for t, b in zip(ts, base)) if base else float("nan")
    return (statistics.median(ts), (statistics.median(base) if base else float("nan")), out.float(), first, diff)


def peak(device) -> float:
    return torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else 0.0


def reset_peak(device, budget: int | None = None) -> None:
    if device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.cuda.set_per_process_memory_fraction(1.0 if budget is None else min(1.0, budget / total), index)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def resident_plan(model: str, cname: str, role: str, dtype_name: str, budget: int) -> Plan:
    cp = ComponentPlan(name=cname, role=role, params=0, stored_bytes=0, placement="resident", precision=dtype_name,
                       compute_dtype=dtype_name, vram_bytes=0, resident_units=0)
    return Plan(model=model, policy="lossless", fits=True, workload=Workload(1024, 1024),
                machine=Machine("bench", budget, 1 << 40, 1e10, 1.0), components=(cp,), attention="sdpa",
                attention_chunk=0, cfg_mode="none", vae_tile=0, peak_vram_bytes=budget, peak_ram_bytes=0,
                seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)


def run_model(name: str, args, device, bw: float, save=lambda rows: None) -> list[dict]:
    cname, dtype_name, batch, budgets = CASES[name]
    model = MODELS[name]
    comp = model.component(cname)
    tiny = args.tiny
    dtype = COMPUTE_DTYPES["fp32" if tiny else dtype_name]
    overrides = None
    if tiny:
        from tiny import TINY

        overrides = TINY[TINY_FALLBACK.get(comp.config, comp.config)]
    size = 128 if tiny else 1024
    req = SimRequest(batch=batch, width=size, height=size, dtype="fp32" if tiny else dtype_name)
    reset_peak(device)
    plain = build_random(comp, device, dtype, overrides)  # the unconstrained reference
    torch.manual_seed(0)
    _, kw = build_inputs(plain, model, comp, req, device=device)
    with torch.no_grad():
        ref = _out(plain(**kw)).float()
    weights = sum(p.numel() * p.element_size() for p in plain.parameters())
    interleave = device.type == "cpu"
    if interleave:  # a second copy to run under lowvram, the plain one timed beside it
        module, plain_fn = copy.deepcopy(plain), plain
        fixed_base = float("nan")
    else:  # the plain module timed alone, then its weights go to host memory, where lowvram takes them
        fixed_base = ab(plain, kw, device, args.steps)[0]
        unconstrained_peak = peak(device)
        plain.to("cpu")
        module, plain_fn = plain, None
        gc.collect()
        torch.cuda.empty_cache()
        rows_first = {"model": name, "mode": "unconstrained", "budget_GiB": None, "s_per_step": fixed_base,
                      "unconstrained_s": fixed_base, "x_unconstrained": 1.0, "first_call_s": fixed_base,
                      "peak_GiB": unconstrained_peak, "max_abs_diff": 0.0}
    rows = [] if interleave else [rows_first]

    def row(mode, s, base, out, first, budget=None, eng=None, diff=float("nan"), **extra):
        base = base if base == base else fixed_base
        extra["overhead_ms_per_call"] = diff * 1000 if diff == diff else (s - base) * 1000
        r = {"model": name, "mode": mode, "budget_GiB": budget, "s_per_step": s, "unconstrained_s": base,
             "x_unconstrained": s / base if base == base and base else None, "first_call_s": first,
             "peak_GiB": peak(device), "max_abs_diff": (out - ref).abs().max().item(), **extra}
        if eng is not None:
            calls = args.steps + 1
            r.update(streamed_GiB=eng.streamed_bytes / GiB, copies_per_call=eng.stats.copies / calls,
                     transfers_per_call=eng.stats.transfers / calls, pinned_GiB=eng.pinned_bytes / GiB,
                     sync_loads=eng.stats.sync_loads, wraparound=eng.stats.wraparound, staged=eng.stats.staged)
            if bw == bw:
                limit = max(base, eng.streamed_bytes / bw)
                r.update(physical_limit_s=limit, x_limit=s / limit)
        rows.append(r)
        save(rows)
        print(r, flush=True)

    total_budget = weights + (8 * GiB if device.type == "cuda" else GiB)  # room for all of it: no eviction
    for keep_hook in (False, True):
        reset_peak(device)
        ex = PlanExecutor(resident_plan(name, cname, comp.role, "fp32" if tiny else dtype_name, total_budget),
                          {cname: module}, device).apply()
        if keep_hook:
            ex._hookless = False  # the behaviour before issue #13: the activation hook runs on every call
        s, base, out, first, diff = ab(module, kw, device, args.steps, kw, plain_fn)
        hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())
        row("all resident, executor" + (", hook kept (before #13)" if keep_hook else ""), s, base, out, first, diff=diff,
            hooks_after_placement=hooks)
        if args.compile and not keep_hook:
            handle = apply_regional_compile(module)
            s, base, out, first, diff = ab(module, kw, device, args.steps, kw, plain_fn)
            row("all resident, executor, blocks compiled", s, base, out, first, diff=diff, compiled_blocks=len(handle.blocks))
            handle.remove()
            torch._dynamo.reset()
        ex.remove()
        gc.collect()

    sim = simulate_component(model, comp, req, config_overrides=overrides)
    elem = next(module.parameters()).element_size()
    ub = [(u.quantizable + u.other) * elem for u in streamable_units(module)]
    forced = split_parents([u.name for u in streamable_units(module)])
    timing = unit_compute_uncached(model, comp, req, overrides)  # each unit's FLOPs, in the order units run
    # on the CPU dry run, a link as slow as the compute (a call's streamed bytes in a call's time at the
    # smallest budget), so the spread rows run there too; the CPU's own copies are memcpys, not a link
    link = bw
    call_s = statistics.median(r["unconstrained_s"] for r in rows if r.get("unconstrained_s"))
    flops_total = sum(timing["flops"]) or 1
    run_s = [call_s * f / flops_total for f in timing["flops"]]

    def timeline_ms(resident, buffers: int) -> float:
        kept = set(resident) if isinstance(resident, tuple) else set(range(resident))
        return 1000 * call_seconds(timing["order"], run_s, [x / link for x in ub], kept | forced, buffers)

    for b in budgets:
        # tiny: a share of the weights, beyond what the runtime keeps resident anyway (a split parent's own
        # tensors: the tiny SD3's position embedding is a third of its weights)
        budget = int(b * GiB) if not tiny else (sim.activation_peak_bytes + sum(ub[i] for i in forced)
                                                + int(weights * 0.4 * b / max(budgets)))
        # split parents' own tensors stay resident whatever K is (runtime/streaming.py): never a buffer's size
        fit = _fit_units([0 if i in forced else x for i, x in enumerate(ub)], budget - sim.activation_peak_bytes
                         - sum(ub[i] for i in forced) - (MARGIN if device.type == "cuda" else 0))
        if fit is None:
            rows.append({"model": name, "mode": "streamed", "budget_GiB": b, "s_per_step": None, "note": "does not fit"})
            continue
        # pinned rows lay each unit out in one buffer (coalesce: the default on CUDA, asked for here so the
        # CPU dry run takes the same path)
        k = fit[0]
        if link != link:
            link = max(1, sum(ub[k:])) / call_s
        variants = [("streamed, pinned, wrap-around", dict(wraparound=True, coalesce=True), k),
                    ("streamed, pinned, no wrap-around", dict(wraparound=False, coalesce=True), k)]
        # the same VRAM spread over other units (and over a third buffer, where it pays) where the copy
        # timeline says a call gets faster
        spread = spread_units(ub, timing["order"], timing["flops"], call_s, link, vram_bytes(ub, set(range(k))), k, forced)
        if spread is not None:
            mode = "streamed, pinned, spread" + (f", {spread.buffers} buffers" if spread.buffers != 2 else "")
            variants.insert(1, (mode, dict(wraparound=True, coalesce=True, buffers=spread.buffers), spread.resident))
        if b == min(budgets):
            variants += [("streamed, pageable, staged", dict(pin_memory=False, stage_pageable=True), k),
                         ("streamed, pageable, direct", dict(pin_memory=False, stage_pageable=False), k),
                         # last: torch's pinned blocks stay cached in its host allocator after they are freed
                         ("streamed, pinned tensor by tensor (before)", dict(coalesce=False), k)]
        for mode, opts, resident in variants:
            reset_peak(device, budget)
            rss = psutil.Process().memory_info().rss
            eng = StreamingEngine(module, device, resident, BudgetAccountant(budget, device), owner=name, **opts).apply()
            rss_added = (psutil.Process().memory_info().rss - rss) / GiB
            s, base, out, first, diff = ab(module, kw, device, args.steps, kw, plain_fn)
            n_res = len(resident) if isinstance(resident, tuple) else resident
            row(f"{mode} ({n_res}/{len(ub)} units resident)", s, base, out, first, diff=diff, budget=b, eng=eng,
                rss_added_GiB=rss_added, timeline_ms=timeline_ms(resident, opts.get("buffers", 2)), buffers=opts.get("buffers", 2))
            if args.compile and opts.get("wraparound") and b == min(budgets):
                handle = apply_regional_compile(module)
                eng.stats = StreamStats(order=eng.stats.order)  # this row's copies only
                s, base, out, first, diff = ab(module, kw, device, args.steps, kw, plain_fn)
                row(f"{mode}, blocks compiled", s, base, out, first, diff=diff, budget=b, eng=eng, compiled_blocks=len(handle.blocks))
                handle.remove()
                torch._dynamo.reset()
            eng.remove()
            gc.collect()
    reset_peak(device)
    del plain, module
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def hook_cost_us(calls: int = 20000) -> dict:
    """Microseconds per call that the executor adds to a module whose forward costs almost nothing (one
    Linear(1, 1) on the CPU): the per-call price of an activation hook, without a model's noise around it."""
    import timeit

    def module():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(1, 1))

    x = torch.randn(1, 1)
    modes = ("plain", "executor", "executor, hook kept (before #13)")
    mods, execs = {}, []
    for mode in modes:
        mods[mode] = module()
        if mode != "plain":
            ex = PlanExecutor(resident_plan("bench", "denoiser", "denoiser", "fp32", 1 << 30), {"denoiser": mods[mode]}, "cpu").apply()
            ex._hookless = mode == "executor"
            execs.append(ex)
    out = {mode: float("inf") for mode in modes}
    with torch.no_grad():
        for mode in modes:
            mods[mode](x)  # placement
        for _ in range(3):  # rounds over the modes, best of each: a busy machine's drift hits all of them
            for mode in modes:
                m = mods[mode]
                out[mode] = min(out[mode], min(timeit.repeat(lambda: m(x), number=calls, repeat=3)) / calls * 1e6)
    for ex in execs:
        ex.remove()
    return out


class _ManyTensors(torch.nn.Module):
    """60 units of 8 tiny tensors (4 Linear(2, 2)): a streamed call's cost is the hooks' per-tensor work."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(4)]) for _ in range(60))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def stream_cost_us(calls: int = 200) -> dict:
    """Microseconds per streamed tensor per call that the streaming hooks add on the CPU (pointing each
    weight at its slot and back, the unit's one copy of a few bytes): best of 5 rounds of `calls` calls."""
    import timeit

    torch.manual_seed(0)
    m, x = _ManyTensors(), torch.randn(1, 2)
    tensors = sum(1 for _ in m.parameters())
    with torch.no_grad():
        plain = min(timeit.repeat(lambda: m(x), number=calls, repeat=5)) / calls
        eng = StreamingEngine(m, "cpu", 0, BudgetAccountant(1 << 30, "cpu"), coalesce=True).apply()
        m(x)  # records the order
        streamed = min(timeit.repeat(lambda: m(x), number=calls, repeat=5)) / calls
        eng.remove()
    return {"plain_ms": plain * 1e3, "streamed_ms": streamed * 1e3, "per_tensor_us": (streamed - plain) / tensors * 1e6}


def table(rows: list[dict]) -> str:
    lines = ["| model | mode | budget GiB | s/step | x unconstrained | overhead ms/call | x physical limit | peak GiB | "
             "copies/call | transfers/call | pinned GiB | RSS added GiB | timeline ms | first call s | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("s_per_step"):
            lines.append(f"| {r['model']} | {r['mode']} | {r['budget_GiB']} | {r.get('note', '-')} |" + " - |" * 11)
            continue
        xu = f"{r['x_unconstrained']:.3f}" if r.get("x_unconstrained") else "-"
        xl = f"{r['x_limit']:.2f}" if r.get("x_limit") else "-"
        cp = f"{r['copies_per_call']:.1f}" if "copies_per_call" in r else "0"
        tr = f"{r['transfers_per_call']:.1f}" if "transfers_per_call" in r else "0"
        pin = f"{r['pinned_GiB']:.2f}" if "pinned_GiB" in r else "-"
        rss = f"{r['rss_added_GiB']:+.2f}" if "rss_added_GiB" in r else "-"
        tl = f"{r['timeline_ms']:.1f}" if "timeline_ms" in r else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {r['budget_GiB'] or '-'} | {r['s_per_step']:.4f} | {xu} | "
                     f"{r.get('overhead_ms_per_call', 0):+.2f} | {xl} | "
                     f"{r['peak_GiB']:.2f} | {cp} | {tr} | {pin} | {rss} | {tl} | {r['first_call_s']:.2f} | {r['max_abs_diff']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (dry run, or the CPU overhead figures)")
    ap.add_argument("--steps", type=int, default=5, help="calls timed per mode (after one warm-up call)")
    ap.add_argument("--models", default="sdxl", help="comma-separated: sdxl, flux-dev, sd35-large")
    ap.add_argument("--compile", action="store_true", help="also time regional torch.compile (item 3a)")
    ap.add_argument("--hook-cost", action="store_true", help="also time the executor's per-call price on a trivial module")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    bw = pinned_bandwidth() if device.type == "cuda" else float("nan")
    rows: list[dict] = []
    t0 = time.perf_counter()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (tiny configs)"
    def save(model_rows: list[dict], extra: dict | None = None) -> None:
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"device": card, "bandwidth": bw if bw == bw else None, "rows": rows + model_rows, **(extra or {})}, f, indent=2)
            os.replace(tmp, args.json)

    for name in filter(None, args.models.split(",")):
        rows += run_model(name, args, device, bw, save)
    print(f"device: {card}; pinned host->device {bw / 1e9:.1f} GB/s; torch {torch.__version__}; "
          f"date {time.strftime('%Y-%m-%d')}; {time.perf_counter() - t0:.0f} s")
    print(table(rows))
    if args.hook_cost:
        costs = hook_cost_us()
        print("per call, Linear(1, 1) on the CPU: " + "; ".join(f"{k} {v:.1f} us" for k, v in costs.items()))
        stream = stream_cost_us()
        print(f"streaming hooks, 480 tiny tensors in 60 units on the CPU: plain {stream['plain_ms']:.2f} ms, streamed "
              f"{stream['streamed_ms']:.2f} ms a call, {stream['per_tensor_us']:.1f} us per streamed tensor")
        save([], {"hook_cost_us": costs, "stream_cost": stream})


if __name__ == "__main__":
    main()
