"""Write `lowvram/shipped.json`: the simulations, parameter counts and unit tables that planning the
catalogue needs, so a first `lowvram plan` / `lowvram gpus` answers in a fraction of a second instead of
simulating for 10-100 s (and never imports torch).

Covered: every catalogue model at its default size and steps — with and without guidance, img2img, its
published ControlNet — for every policy on a bf16 card, an fp16-only card and the VRAM tiers `gpus --tiers`
uses; SDXL and Flux also at 512² and 2048². The planner asks the same questions on every card (the answers
depend on the workload and the compute dtype, and fp16 shares bf16's), which `tests/test_shipped.py`
checks by planning every card cold. Anything else is simulated on first use and cached as before.

    python -m lowvram.ship          # after a change to the simulator, the configs or the planner's questions
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace


FP16_CARD = "GTX 1060 6GB"  # the fp16-only card whose questions ship (any fp16 card asks the same ones)


def main() -> None:
    os.environ["LOWVRAM_CACHE_DIR"] = tempfile.mkdtemp(prefix="lowvram-ship-")
    os.environ["LOWVRAM_NO_SHIPPED"] = "1"  # compute everything afresh
    from . import cache
    from .catalogue import MODELS
    from .catalogue.build import spec_params
    from .catalogue.controlnet import DEFAULTS
    from .plan import Policy, Workload, make_plan
    from .machines.cards import CARDS, find_card
    from .plan.machine import TIER_CARD, machine_from_card, tier_machines
    from .contract import POLICIES

    cache.RECORD = {}
    t0 = time.perf_counter()
    gib = 2**30
    tiers = tier_machines(32 * gib)
    machines = [machine_from_card(find_card(name), 32 * gib) for name in (TIER_CARD, FP16_CARD)] + tiers
    # cards below the smallest tier plan their VAE decode in smaller tiles: those simulations ship too
    machines += [machine_from_card(c, 32 * gib) for c in CARDS if c.vram_bytes < tiers[0].vram_bytes]
    for model in MODELS.values():
        sizes = [(model.width, model.height)] + ([(512, 512), (2048, 2048)] if model.name in ("sdxl", "flux-dev") else [])
        for w, h in sizes:
            base = Workload(w, h, 1, model.steps)
            loads = [base, replace(base, guidance=False), replace(base, img2img=True)]
            if model.name in DEFAULTS and (w, h) == (model.width, model.height):
                loads.append(replace(base, controlnet=True))
            for wl in loads:
                for m in machines:
                    for q in POLICIES:
                        make_plan(model, wl, m, Policy(q))
        print(f"{model.name}: {sum(len(v) for v in cache.RECORD.values())} answers, {time.perf_counter() - t0:.0f} s",
              flush=True)
    for model in MODELS.values():  # `lowvram models` lists every component's parameter count
        for comp in model.components:
            spec_params(comp)
    doc = {"about": "answers planning the catalogue needs; written by `python -m lowvram.ship`",
           "versions": dict(zip(("torch", "diffusers", "transformers"), cache.library_versions())),
           "answers": {k: dict(sorted(v.items())) for k, v in sorted(cache.RECORD.items())}}
    tmp = cache.SHIPPED + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    os.replace(tmp, cache.SHIPPED)
    print(f"wrote {cache.SHIPPED} ({os.path.getsize(cache.SHIPPED) // 1024} KiB) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
