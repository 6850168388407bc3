"""How far the page's estimated readout (plan/estimated.py) is from the exact plan, at sizes it was not
fitted to, and how long the readout of an unseen size takes.

    python bench/estimate_error.py [--json out.json] [--models sd15,sdxl,flux-dev,sd35-large] [--cache DIR]
                                   [--batch N] [--first]   # N images (anchors ship batch 1 and 2); one size each

For each model and held-out size (none of them an anchor, simulate/estimate.py), on the machines whose
plans ship (lowvram/ship.py) under every policy: the estimated plan, planned first in an empty cache (so
it knows only the shipped answers), then the exact plan (its simulations cached in --cache, so a rerun is
quick). Prints the largest relative error of peak VRAM and s/step per model and overall, and the
readout's time for an unseen size — the three policies' plans, as /lowvram/v1/readout makes them — cold
(the first in a fresh process that has imported what a server has) and warm (later ones).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Held-out sizes: common non-square sizes of each family, none of them an anchor (squares 512..2048).
HELD_OUT = {
    "sd15": [(640, 448), (512, 768), (704, 576)],
    "sdxl": [(896, 1152), (1216, 832), (1344, 768)],
    "flux-dev": [(832, 1216), (1344, 768)],
    "sd35-large": [(896, 1152), (1280, 768)],
}
RAM_GIB = 32  # the RAM the shipped tier machines are planned with (lowvram/ship.py)

COLD_SCRIPT = """
import time, sys
import numpy, torch  # what a running server has imported
from lowvram.catalogue import get_model
from lowvram.contract import POLICIES
from lowvram.plan import Policy, Workload
from lowvram.plan.estimated import estimated_plan
from lowvram.plan.machine import TIER_CARD, machine_from_card
from lowvram.machines.cards import find_card
m = get_model(sys.argv[1]); machine = machine_from_card(find_card(TIER_CARD), 32 * 2**30)
t0 = time.perf_counter()
plans = [estimated_plan(m, Workload(int(sys.argv[2]), int(sys.argv[3]), 1, m.steps), machine, Policy(q)) for q in POLICIES]
print(time.perf_counter() - t0, all(p is not None for p in plans))
"""


def machines():
    from lowvram.machines.cards import CARDS, find_card
    from lowvram.plan.machine import TIER_CARD, machine_from_card, tier_machines
    from lowvram.ship import FP16_CARD

    gib = 2**30
    tiers = tier_machines(RAM_GIB * gib)
    out = [machine_from_card(find_card(n), RAM_GIB * gib) for n in (TIER_CARD, FP16_CARD)] + tiers
    return out + [machine_from_card(c, RAM_GIB * gib) for c in CARDS if c.vram_bytes < tiers[0].vram_bytes]


def rel(a: float, b: float) -> float:
    return abs(a - b) / b if b else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--models", default=",".join(HELD_OUT))
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lowvram-bench-exact"))
    ap.add_argument("--batch", type=int, default=1, help="images per workload (the denoiser sees twice that with CFG)")
    ap.add_argument("--first", action="store_true", help="only each model's first held-out size")
    a = ap.parse_args()
    held_out = {k: v[:1] if a.first else v for k, v in HELD_OUT.items()}
    names = [n for n in a.models.split(",") if n]
    empty = tempfile.mkdtemp(prefix="lowvram-bench-estimate-")
    os.environ["LOWVRAM_CACHE_DIR"] = empty  # the estimates know only the shipped answers
    from lowvram.catalogue import get_model
    from lowvram.contract import POLICIES
    from lowvram.plan import Policy, Workload, make_plan
    from lowvram.plan.estimated import estimated_plan

    from dataclasses import replace

    from lowvram.ship import anchor_requests
    from lowvram.simulate.api import known_result
    from lowvram.simulate.estimate import estimate_result

    ms = machines()
    estimates, readout_s, sim_estimates = {}, [], {}
    for name in names:
        model = get_model(name)
        for w, h in held_out[name]:
            # each simulation the anchors cover, estimated at this size (compared below where it was simulated)
            for comp, req in anchor_requests(model):
                held = replace(req, width=w, height=h, batch=req.batch * a.batch)  # the anchors repeat each series per size: keyed once
                if (name, comp, held) not in sim_estimates and (not held.vae_tile or held.vae_tile < max(w, h)):
                    sim_estimates[(name, comp, held)] = estimate_result(model, comp, held)
            wl = Workload(w, h, a.batch, model.steps)
            t0 = time.perf_counter()
            for q in POLICIES:  # the readout: three plans on the server's machine
                estimated_plan(model, wl, ms[0], Policy(q))
            readout_s.append(time.perf_counter() - t0)
            for m in ms:
                for q in POLICIES:
                    estimates[(name, w, h, m.name, m.vram_bytes, q)] = estimated_plan(model, wl, m, Policy(q))
    warm_s = readout_s[1:]  # the first one in this process also read the shipped answers
    os.environ["LOWVRAM_CACHE_DIR"] = a.cache
    rows, per_model = [], {}
    for (name, w, h, mname, vram, q), est in estimates.items():
        model = get_model(name)
        m = next(x for x in ms if x.name == mname and x.vram_bytes == vram)
        t0 = time.perf_counter()
        exact = make_plan(model, Workload(w, h, a.batch, model.steps), m, Policy(q))
        row = {"model": name, "width": w, "height": h, "machine": mname, "vram_gib": vram / 2**30, "policy": q,
               "estimated": est is not None and est.estimated, "exact_s": time.perf_counter() - t0}
        if est is None:
            row["no_estimate"] = True
        else:
            row.update(peak_err=rel(est.peak_vram_bytes, exact.peak_vram_bytes),
                       step_err=rel(est.seconds_per_step, exact.seconds_per_step),
                       image_err=rel(est.seconds_per_image, exact.seconds_per_image),
                       same_fit=est.fits == exact.fits, same_cfg=est.cfg_mode == exact.cfg_mode,
                       same_tile=est.vae_tile == exact.vae_tile)
        rows.append(row)
        agg = per_model.setdefault(name, {"plans": 0, "no_estimate": 0, "peak": 0.0, "step": 0.0, "image": 0.0,
                                          "fit_differs": 0})
        agg["plans"] += 1
        if est is None:
            agg["no_estimate"] += 1
            continue
        agg["peak"] = max(agg["peak"], row["peak_err"])
        agg["step"] = max(agg["step"], row["step_err"])
        agg["image"] = max(agg["image"], row["image_err"])
        agg["fit_differs"] += not row["same_fit"]
    sims = {}  # model -> max relative error of each field over the simulations both estimated and simulated
    for (name, comp, req), est in sim_estimates.items():
        exact = known_result(get_model(name), comp, req)  # simulated by the exact plans above, or not needed
        if est is None or exact is None:
            continue
        g = sims.setdefault(name, {"simulations": 0, "activation_peak": 0.0, "flops": 0.0})
        g["simulations"] += 1
        g["activation_peak"] = max(g["activation_peak"], rel(est.result.activation_peak_bytes, exact.activation_peak_bytes))
        g["flops"] = max(g["flops"], rel(est.result.flops, exact.flops))
    cold = []
    for name in names:  # a fresh process per model: its first unseen size
        w, h = HELD_OUT[name][0]
        env = dict(os.environ, LOWVRAM_CACHE_DIR=tempfile.mkdtemp(prefix="lowvram-bench-cold-"))
        r = subprocess.run([sys.executable, "-c", COLD_SCRIPT, name, str(w), str(h)], env=env, capture_output=True,
                           text=True, timeout=600)
        cold.append(float(r.stdout.split()[0]))
    print(f"date {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores; held-out sizes {held_out}, batch {a.batch}")
    print(f"{len(ms)} machines x {len(POLICIES)} policies per size")
    print("| model | plans | no estimate | max peak VRAM error | max s/step error | max s/image error | fits differs |")
    print("|---|---|---|---|---|---|---|")
    for name, g in per_model.items():
        print(f"| {name} | {g['plans']} | {g['no_estimate']} | {g['peak']:.2%} | {g['step']:.2%} | {g['image']:.2%} | "
              f"{g['fit_differs']} |")
    print("| model | simulations compared | max activation-peak error | max FLOPs error |")
    print("|---|---|---|---|")
    for name, g in sims.items():
        print(f"| {name} | {g['simulations']} | {g['activation_peak']:.2%} | {g['flops']:.2%} |")
    print(f"readout of an unseen size (3 policies): cold {max(cold):.2f} s (worst of {len(cold)}), "
          f"warm max {max(warm_s or readout_s):.3f} s, median {sorted(warm_s or readout_s)[len(warm_s or readout_s) // 2]:.3f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"per_model": per_model, "simulations": sims, "readout_cold_s": cold, "readout_warm_s": warm_s, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
