"""lowvram's streaming at VRAM budgets vs unconstrained, vs the physical limit, vs its plan, vs the peers.

One real-size denoiser with random weights, built straight on the GPU (bench/random_models.py), per
process (`--model`): the SDXL UNet (CFG batch 2), the FLUX.1-dev transformer, the SD3.5-Large transformer
(CFG batch 2), at 1024². Rows, each written to the JSON file as soon as it is measured (a run cut short
by its time limit keeps what it measured):
  (a) unconstrained (the module on the GPU, no hooks) and lowvram all-resident (the whole card's plan);
  (b) lowvram under each budget (the budget enforced with torch.cuda.set_per_process_memory_fraction),
      with the physical limit max(compute, streamed bytes / measured pinned host->device bandwidth) —
      compute being the unconstrained step, i.e. the card's real throughput on this model — and whether
      the output is bit-identical to the unconstrained one;
  (c) the peers (bench/peers.py: diffusers' model / sequential / group offloading, ComfyUI's partial
      loading, mmgp) at one budget;
  (d) every lowvram row next to its plan: `make_plan(model, 1024², this card with --vram BUDGET and the
      measured link, lossless)` — predicted s/step and peak VRAM of the denoiser's phase vs measured.
lowvram's rows run the plan through the runtime's PlanExecutor, as `generate` does (its activation hook,
its out-of-memory guard, its StreamingEngine and BudgetAccountant): what a user's step costs.

    python bench/gpu_offload.py --model flux-dev --json out.json        # CUDA; bench/gpu_session.sh runs all
    python bench/gpu_offload.py --model flux-dev --tiny --json out.json # dry run on CPU, tiny configs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lowvram.catalogue import MODELS  # noqa: E402
from lowvram.contract import Workload  # noqa: E402
from lowvram.kernels.dtypes import COMPUTE_DTYPES  # noqa: E402
from lowvram.plan import Policy, make_plan  # noqa: E402
from lowvram.plan.machine import resolve_machine  # noqa: E402
from lowvram.runtime.executor import PlanExecutor  # noqa: E402
from lowvram.simulate import SimRequest, simulate_component  # noqa: E402
from lowvram.simulate.run import build_inputs  # noqa: E402

from host_memory import PeakRSS  # noqa: E402
from comfy_peer import ComfyAbsent  # noqa: E402
from peers import PIN_THEIR_OWN, peers_at, pinned_bytes, unpin_  # noqa: E402
from random_models import build_random, pinned_bandwidth  # noqa: E402

GiB = 2**30


@dataclass(frozen=True)
class Case:
    budgets_gib: tuple[int, ...]  # lowvram's budgets (issue #13: SDXL 4, Flux 8 and 12)
    peer_budget_gib: int | None  # where the peers run (their speed does not depend on it; whether they fit does)


CASES = {
    # 6 GiB: all resident under a budget (the 2026-11-26 H100 run measured 1.19x unconstrained there)
    "sdxl": Case((4, 6), 4),
    "flux-dev": Case((8, 12), 8),
    "sd35-large": Case((8, 12), 8),
}
SIZE = 1024  # pixels: the workload
STEPS = 20  # the plan's workload (s/step does not depend on it; the plan's per-image figures do)
# The tiny dry run plans for a card it does not have (a CPU plan has no streaming): the project's
# reference card, with a PCIe 5.0 x16 link's usual pinned figure (docs/benchmarks.md measured 54.9 GB/s).
TINY_CARD, TINY_LINK_GBPS, TINY_SIZE = "H100 SXM", 55.0, 128
# tests/fixtures/tiny.py has no SD3.5-Large entry; the SD3 one scales the same class down
TINY_FALLBACK = {"sd35-large-transformer": "sd3-medium-transformer"}


class Bench:
    """One model's measurements; `rows` grows as they are taken and is written after each."""

    def __init__(self, args, device: torch.device, bandwidth: float) -> None:
        self.args, self.device, self.bw = args, device, bandwidth
        self.cuda = device.type == "cuda"
        self.spec = MODELS[args.model]
        self.comp = next(c for c in self.spec.components if c.role == "denoiser")
        self.case = CASES[args.model]
        self.rows: list[dict] = []
        self.meta: dict = {"model": args.model, "component": self.comp.name, "bandwidth": bandwidth,
                           "device": torch.cuda.get_device_name(device) if self.cuda else "CPU (tiny configs, dry run)",
                           "date": time.strftime("%Y-%m-%d"), "tiny": args.tiny}

    # ------------------------------------------------------------------ plumbing
    def save(self, echo: bool = True) -> None:
        if echo and self.rows:
            print(json.dumps(self.rows[-1], default=str), flush=True)
        if self.args.json:
            tmp = self.args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump({**self.meta, "rows": self.rows}, f, indent=2, default=str)
            os.replace(tmp, self.args.json)  # a kill mid-write leaves the previous complete file

    def set_budget(self, budget_bytes: int | None) -> None:
        if not self.cuda:
            return
        total = torch.cuda.get_device_properties(self.device).total_memory
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        fraction = 1.0 if budget_bytes is None else min(1.0, budget_bytes / total)
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_vram(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_steps(self, kw: dict, calls: int, cap_s: float) -> tuple[float, int, torch.Tensor]:
        """Median seconds per step (a step = `calls` calls) after one warm-up step, over up to --steps
        steps or until `cap_s` seconds have gone (at least one timed step). Returns (s, steps, output)."""
        out = None
        with torch.no_grad():
            for _ in range(calls):
                out = _first(self.module(**kw))  # warm-up; lowvram records its unit order here
            self.sync()
            ts: list[float] = []
            start = time.perf_counter()
            while len(ts) < self.args.steps and (not ts or time.perf_counter() - start < cap_s):
                t0 = time.perf_counter()
                for _ in range(calls):
                    out = _first(self.module(**kw))
                self.sync()
                ts.append(time.perf_counter() - t0)
        return statistics.median(ts), len(ts), out.detach().float().cpu()

    # ------------------------------------------------------------------ planning
    def plan_for(self, budget_gib: int | None):
        """lowvram's plan for this card (or the tiny run's stand-in) at `budget_gib` (None: the whole card)."""
        vram = f"{budget_gib}GiB" if budget_gib else None
        if self.cuda:
            machine = resolve_machine(None, vram, None, link_gbps=self.bw / 1e9)
        else:
            machine = resolve_machine(TINY_CARD, vram, None, link_gbps=TINY_LINK_GBPS)
        size = TINY_SIZE if self.args.tiny else SIZE
        plan = make_plan(self.spec, Workload(size, size, steps=STEPS), machine, Policy("lossless"), find_smallest=False)
        cp = next(c for c in plan.components if c.name == self.comp.name)
        return plan, cp

    # ------------------------------------------------------------------ the model
    def build(self, dtype: torch.dtype) -> None:
        overrides = None
        if self.args.tiny:
            from tiny import TINY

            overrides = TINY[TINY_FALLBACK.get(self.comp.config, self.comp.config)]
        self.overrides = overrides
        t0 = time.perf_counter()
        self.set_budget(None)
        self.module = build_random(self.comp, self.device, dtype, overrides)
        self.sync()
        self.meta["build_s"] = time.perf_counter() - t0
        self.meta["weights_GiB"] = sum(p.numel() * p.element_size() for p in self.module.parameters()) / GiB

    def inputs(self, batch: int, dtype_name: str) -> dict:
        size = TINY_SIZE if self.args.tiny else SIZE
        torch.manual_seed(0)
        req = SimRequest(batch=batch, width=size, height=size, dtype=dtype_name)
        _, kw = build_inputs(self.module, self.spec, self.comp, req, device=self.device)
        return kw

    def compute_floor(self, batch: int, dtype_name: str) -> float | None:
        """FLOPs of one call (the simulator's count) / the card table's dense peak: the hardware's floor."""
        size = TINY_SIZE if self.args.tiny else SIZE
        try:
            sim = simulate_component(self.spec, self.comp, SimRequest(batch=batch, width=size, height=size, dtype=dtype_name),
                                     config_overrides=self.overrides)
        except Exception as e:  # a figure beside the point; never worth the other rows
            print(f"simulation failed: {type(e).__name__}: {e}", flush=True)
            return None
        self.meta["tflop_per_call"] = sim.flops / 1e12
        return None if self.args.tiny else sim.flops / (self.card_tflops * 1e12)

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        whole, whole_cp = self.plan_for(None)
        budget_plans = {b: self.plan_for(b) for b in self.case.budgets_gib}
        dtype_name = "fp32" if self.args.tiny else whole_cp.compute_dtype
        dtype = COMPUTE_DTYPES[dtype_name]
        self.card_tflops = whole.machine.tflops
        self.meta.update(dtype=dtype_name, plan_machine=whole.machine.name, card_tflops=whole.machine.tflops)
        self.build(dtype)
        batch_of = {"batch": 2, "split": 1, "none": 1}
        calls_of = {"batch": 1, "split": 2, "none": 1}
        refs: dict[int, torch.Tensor] = {}
        base_s: dict[int, float] = {}  # unconstrained seconds per call, by batch
        floors: dict[int, float | None] = {}
        for plan, _ in [(whole, whole_cp)] + list(budget_plans.values()):
            b, calls = batch_of[plan.cfg_mode], calls_of[plan.cfg_mode]
            if b in refs:
                continue
            kw = self.inputs(b, dtype_name)
            self.set_budget(None)
            s, n, refs[b] = self.time_steps(kw, calls, self.args.cap_s)
            base_s[b] = s / calls
            floors[b] = self.compute_floor(b, dtype_name)
            self.rows.append({"mode": "unconstrained", "budget_GiB": None, "batch": b, "calls_per_step": calls,
                              "s_per_step": s, "steps_timed": n, "peak_vram_GiB": self.peak_vram() / GiB,
                              "compute_floor_s": floors[b] and floors[b] * calls, "max_abs_diff": 0.0, "bit_identical": True})
            self.save()
            del kw
        self.module.to("cpu")  # weights in host RAM, as lowvram's loader leaves them before placing
        self.sync()
        for budget, (plan, cp) in [(None, (whole, whole_cp))] + list(budget_plans.items()):
            self.lowvram_row(budget, plan, cp, refs, base_s, dtype_name)
        if self.case.peer_budget_gib and not self.args.no_peers:
            plan, cp = budget_plans.get(self.case.peer_budget_gib) or self.plan_for(self.case.peer_budget_gib)
            # the peers run the model's own batch (CFG in one batch of 2, as diffusers' pipelines do) against
            # the unconstrained run of that batch; their limit is lowvram's at that budget: the bytes its plan
            # must stream (what does not fit) or compute, whichever is slower
            b = batch_of[whole.cfg_mode]
            limit = self.limit(base_s[b], cp.streamed_bytes)
            kw = self.inputs(b, dtype_name)
            peers = peers_at(int(self.case.peer_budget_gib * GiB), whole_cp.activation_bytes)
            for name, apply in peers.items():
                if self.args.peers and name not in self.args.peers.split(","):
                    continue
                self.peer_row(name, apply, self.case.peer_budget_gib, kw, refs[b], limit)
            del kw

    def limit(self, compute_s: float, streamed_bytes: int) -> float:
        """The physical limit of a step: compute, or the bytes that must cross the link, whichever is slower."""
        return max(compute_s, streamed_bytes / self.bw) if self.bw == self.bw else compute_s  # NaN on a CPU run

    def lowvram_row(self, budget, plan, cp, refs, base_s, dtype_name) -> None:
        b = 2 if plan.cfg_mode == "batch" else 1
        calls = 2 if plan.cfg_mode == "split" else 1
        row = {"mode": "lowvram", "budget_GiB": budget, "batch": b, "calls_per_step": calls, "placement": cp.placement,
               "resident_units": cp.resident_units, "total_units": cp.total_units,
               "spread": bool(cp.resident_indices), "stream_buffers": cp.stream_buffers,
               "predicted_s_per_step": plan.seconds_per_step,
               # what the allocator should see at the denoiser's peak: its weights on the device (resident
               # part + stream buffers) and its activations; the plan's reserve (CUDA context, workspaces)
               # is outside torch.cuda.max_memory_allocated
               "predicted_peak_vram_GiB": (cp.vram_bytes + cp.activation_bytes) / GiB,
               "plan_reserve_GiB": plan.reserve_bytes / GiB,
               "predicted_streamed_GiB": cp.streamed_bytes / GiB, "plan_fits": plan.fits}
        if not plan.fits or cp.placement == "cpu":
            row["note"] = "the plan does not put the denoiser on this budget's GPU"
            self.rows.append(row)
            self.save()
            return
        kw = self.inputs(b, dtype_name)
        budget_bytes = int(budget * GiB) if budget else None
        self.set_budget(budget_bytes)
        ex = None
        try:
            with PeakRSS() as ram:
                t0 = time.perf_counter()
                ex = PlanExecutor(self.runnable(plan), {self.comp.name: self.module}, self.device).apply()
                ex.activate(self.comp.name)  # the placement, timed apart from the steps
                self.sync()
                row["setup_s"] = time.perf_counter() - t0
                s, n, out = self.time_steps(kw, calls, self.args.cap_s)
            eng = ex.engines[self.comp.name]
            streamed = eng.streamed_bytes
            ref = refs.get(b)
            lim = self.limit(base_s[b] * calls, streamed * calls)
            row.update(s_per_step=s, steps_timed=n, peak_vram_GiB=self.peak_vram() / GiB, peak_ram_GiB=ram.peak_bytes / GiB,
                       streamed_GiB=streamed * calls / GiB, physical_limit_s=lim, ratio_to_limit=s / lim,
                       vs_unconstrained=s / (base_s[b] * calls), sync_loads=eng.stats.sync_loads, replans=list(ex.replans),
                       max_abs_diff=(out - ref).abs().max().item() if ref is not None else None,
                       bit_identical=bool(torch.equal(out, ref)) if ref is not None else None,
                       predicted_error_pct=100 * (plan.seconds_per_step - s) / s)
        except Exception as e:  # one budget failing must not cost the others (device time is scarce)
            row["note"] = f"{type(e).__name__}: {e}"[:300]
        finally:
            if ex is not None:
                ex.remove()
            self.module.to("cpu")
            self.set_budget(None)
        self.rows.append(row)
        self.save()

    def runnable(self, plan):
        """The plan as the executor should run it here: unchanged on the GPU; in the tiny CPU dry run with
        the denoiser in fp32 (what the module is built in there: a CPU without bf16 instructions is ~150x
        slower in bf16, docs/benchmarks.md), so the executor's dtype check holds."""
        if not self.args.tiny:
            return plan
        comps = tuple(replace(c, precision="fp32", compute_dtype="fp32") if c.name == self.comp.name else c
                      for c in plan.components)
        return replace(plan, components=comps)

    def peer_row(self, name, apply, budget_gib, kw, ref, limit) -> None:
        row = {"mode": name, "budget_GiB": budget_gib, "physical_limit_s": limit}
        if name in PIN_THEIR_OWN:
            row["prepinned_GiB"] = pinned_bytes(self.module) / GiB
        else:
            row["unpinned_GiB"] = unpin_(self.module) / GiB
        self.set_budget(int(budget_gib * GiB))
        undo = None
        try:
            if hasattr(apply, "prepare"):  # what the tool does once per process (ComfyUI: import), not timed as setup
                t0 = time.perf_counter()
                apply.prepare(self.device)
                row["prepare_s"] = time.perf_counter() - t0
            with PeakRSS() as ram:
                t0 = time.perf_counter()
                undo = apply(self.module, self.device)
                self.sync()
                row["setup_s"] = time.perf_counter() - t0
                row.update(getattr(undo, "info", {}))  # a peer's own figures (ComfyUI: what it loaded, cast, moved)
                s, n, out = self.time_steps(kw, 1, self.args.peer_cap_s)
            row.update(s_per_step=s, steps_timed=n, peak_vram_GiB=self.peak_vram() / GiB, peak_ram_GiB=ram.peak_bytes / GiB,
                       ratio_to_limit=s / limit,
                       max_abs_diff=(out - ref).abs().max().item() if ref is not None else None,
                       bit_identical=bool(torch.equal(out, ref)) if ref is not None else None)
        except torch.OutOfMemoryError:
            row["note"] = "out of memory"
        except ComfyAbsent as e:  # ComfyUI's code is placed by the session, not shipped: say where it was looked for
            row["note"] = str(e)
        except Exception as e:  # a peer that cannot run here is a row saying why, not a lost run
            row["note"] = f"{type(e).__name__}: {e}"[:300]
        finally:
            try:
                if undo is not None:
                    undo()
                self.module.to("cpu")
            except Exception as e:  # a peer that cannot be taken off spoils the next ones: stop here
                row["note"] = (row.get("note", "") + f"; could not be removed: {type(e).__name__}: {e}")[:400]
                self.rows.append(row)
                self.save()
                raise SystemExit(f"{name} could not be removed; the remaining peers are not measured")
            self.set_budget(None)
        self.rows.append(row)
        self.save()


def _first(o):
    if isinstance(o, (tuple, list)):
        return o[0]
    return getattr(o, "sample", o)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sdxl", choices=sorted(CASES))
    ap.add_argument("--tiny", action="store_true", default=bool(os.environ.get("LOWVRAM_BENCH_TINY")),
                    help="dry run on CPU with tiny configs (also LOWVRAM_BENCH_TINY=1)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row at most (after one warm-up step)")
    ap.add_argument("--cap-s", type=float, default=4.0, help="stop timing a lowvram row after this many seconds")
    ap.add_argument("--peer-cap-s", type=float, default=4.0, help="stop timing a peer after this many seconds")
    ap.add_argument("--peers", default="", help="comma-separated peer names to run (default: all)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", help="rows written here after each measurement")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    bw = pinned_bandwidth() if device.type == "cuda" else float("nan")
    t0 = time.perf_counter()
    bench = Bench(args, device, bw)
    try:
        bench.run()
    finally:
        bench.meta["seconds"] = time.perf_counter() - t0
        if bench.rows:
            bench.save(echo=False)


if __name__ == "__main__":
    main()
