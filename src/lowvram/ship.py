"""Write `lowvram/shipped.json`: the simulations, parameter counts and unit tables that planning the
catalogue needs, so a first `lowvram plan` / `lowvram gpus` answers in a fraction of a second instead of
simulating for 10-100 s (and never imports torch).

Covered: every catalogue model at its default size and steps — with and without guidance, img2img, its
published ControlNet — for every policy on a bf16 card, an fp16-only card and the VRAM tiers `gpus --tiers`
uses; SDXL and Flux also at 512² and 2048². The planner asks the same questions on every card (the answers
depend on the workload and the compute dtype, and fp16 shares bf16's), which `tests/test_shipped.py`
checks by planning every card cold. Anything else is simulated on first use and cached as before.

    python -m lowvram.ship          # after a change to the simulator, the configs or the planner's questions
    python -m lowvram.ship --anchors sd15,sdxl   # add the page's estimate anchors (below) to the shipped file
    python -m lowvram.ship --unit-compute [sd15,sdxl]  # add the unit timings (every model's by default)

Anchors: the page's readout estimates a size never simulated from the same component's answers at other
sizes (simulate/estimate.py), which needs three known sizes per series. `--anchors` adds, for the named
models, the denoiser (batch 1 and 2), VAE decode (whole and in each tile size) and VAE encode simulations at
estimate.ANCHOR_SIDES (and whole VAE decodes at the tile sizes below), keeping every answer already shipped (a full run above keeps them too).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace


FP16_CARD = "GTX 1060 6GB"  # the fp16-only card whose questions ship (any fp16 card asks the same ones)
# Models whose estimate anchors ship (a series needs 3 known sizes). HiDream-I1, Qwen-Image and DeepFloyd IF
# do not (minutes per anchor on fake tensors), nor the SDXL refiner (rarely planned at other sizes): their
# readout estimates once the user's cache holds two more sizes, and is exact (simulated) before that.
ANCHOR_MODELS = ("sd15", "sd21", "sdxl", "flux-dev", "flux-schnell", "sd35-large", "sd35-medium", "sd3-medium",
                 "chroma", "pixart-sigma", "pixart-alpha")


def anchor_requests(model, dtype: str = "bf16"):
    """(component, SimRequest) pairs the readout's estimates need known at each anchor size."""
    from .plan import cost
    from .simulate import SimRequest
    from .simulate.estimate import ANCHOR_SIDES, VAE_TILE_ANCHOR_SIDES

    for side in VAE_TILE_ANCHOR_SIDES:  # the tiles a tiled decode is composed from
        for comp in model.components:
            if comp.role == "vae" and comp.class_name == "AutoencoderKL":
                yield comp, SimRequest(op="decode", width=side, height=side, dtype=dtype)
    for side in ANCHOR_SIDES:
        for comp in model.components:
            if comp.role == "denoiser":
                for batch in (1, 2):  # CFG split / CFG in one batch (also guidance off, batch 1)
                    yield comp, SimRequest(batch=batch, width=side, height=side, dtype=dtype)
            elif comp.role == "vae":
                tiles = cost.VAE_TILES if comp.class_name == "AutoencoderKL" else ()
                for tile in (0,) + tuple(t for t in tiles if t < side):
                    yield comp, SimRequest(op="decode", width=side, height=side, dtype=dtype, vae_tile=tile)
                yield comp, SimRequest(op="encode", width=side, height=side, dtype=dtype)


def add_anchors(names: list[str]) -> None:
    """Simulate the anchors of `names` (answers already shipped are reused) and merge them into the
    shipped file after each model, so an interrupted run keeps what it finished."""
    from .simulate import simulate_component

    _add_answers(names, anchor_requests, simulate_component, "anchors")


def _add_answers(names: list[str], requests, answer, what: str) -> None:
    """answer(model, comp, req) for every request of each named model, merged into the shipped file after
    each model (answers already shipped are reused; an interrupted run keeps what it finished)."""
    os.environ["LOWVRAM_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"lowvram-{what.replace(' ', '-')}-")
    from . import cache
    from .catalogue import get_model

    for name in names:
        model = get_model(name)
        cache.RECORD = {}
        t0 = time.perf_counter()
        for comp, req in requests(model):
            answer(model, comp, req)
        _merge_recorded(cache)
        print(f"{name}: {what} in {time.perf_counter() - t0:.0f} s", flush=True)


def _merge_recorded(cache) -> None:
    """Merge what `cache.RECORD` holds into the shipped file (atomically), keeping every other answer."""
    with open(cache.SHIPPED) as f:
        doc = json.load(f)
    for kind, answers in cache.RECORD.items():
        doc["answers"].setdefault(kind, {}).update(answers)
    doc["answers"] = {k: dict(sorted(v.items())) for k, v in sorted(doc["answers"].items())}
    tmp = cache.SHIPPED + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    os.replace(tmp, cache.SHIPPED)
    cache._SHIPPED = None  # re-read: later lookups see what was just merged


def unit_compute_requests(model):
    """(component, SimRequest) of the unit timings the planner reads to spread resident units
    (plan/interleave_choice.py): its components of interleave_choice.ROLES (the denoiser), once, at the
    model's default size."""
    from .plan.interleave_choice import ROLES
    from .simulate import SimRequest

    for comp in model.components:
        if comp.role in ROLES:
            yield comp, SimRequest(width=model.width, height=model.height, dtype="bf16")


def add_unit_compute(names: list[str]) -> None:
    """Time the units of `names` (every catalogue model by default) and merge them into the shipped file."""
    from .catalogue import MODELS
    from .simulate.api import unit_compute

    _add_answers(names or list(MODELS), unit_compute_requests, unit_compute, "unit timings")


def main() -> None:
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--anchors":
        add_anchors([n for n in sys.argv[2].split(",") if n])
        return
    if len(sys.argv) in (2, 3) and sys.argv[1] == "--unit-compute":
        add_unit_compute([n for n in (sys.argv[2] if len(sys.argv) == 3 else "").split(",") if n])
        return
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
    from .simulate import simulate_component

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
    for name in ANCHOR_MODELS:  # the page's estimates for sizes never simulated (module docstring)
        model = MODELS[name]
        for comp, req in anchor_requests(model):
            simulate_component(model, comp, req)
    from .simulate.api import unit_compute

    for model in MODELS.values():  # the unit timings spreading resident units reads (plan/interleave_choice.py)
        for comp, req in unit_compute_requests(model):
            unit_compute(model, comp, req)
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
