"""The page's estimated readout for sizes never simulated (simulate/estimate.py, plan/estimated.py): its
error against exact simulations of real architectures, the readout answering at once with `estimated`
and replacing it with the exact plan from the background, and the Session planning from exact
simulations only. The known sizes are the shipped anchors (lowvram/ship.py --anchors)."""

import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from lowvram.catalogue import get_model
from lowvram.contract import POLICIES
from lowvram.machines.cards import find_card
from lowvram.plan import Policy, Workload, make_plan
from lowvram.plan.estimated import estimated_plan
from lowvram.plan.machine import machine_from_card
from lowvram.simulate import SimRequest, SimResult, simulate_component
from lowvram.simulate import estimate as estimate_mod
from lowvram.simulate.estimate import estimate_result

# Measured with bench/estimate_error.py (docs/benchmarks.md): at sizes between the anchors, SD1.5's UNet
# and VAE estimates (whole and tiled decodes) are exact to the byte and FLOP (the peak falls on the same
# op at every size, and every tensor there is linear or quadratic in the pixel count); 1 % leaves room
# for a library update.
ERROR_BOUND = 0.01
# The readout of an unseen size: well under a second on an idle 2-core machine (the bench's figure);
# this bound allows for the test machine's load.
READOUT_LIMIT_S = 3.0
ROUNDING_SLACK_BYTES = 4 * 512  # a few small tensors' rounding to the CUDA allocator's 512-byte blocks
EXACT_WAIT_S = 600  # two fake-tensor simulations of SD1.5 in the background, on a loaded 2-core machine
POLL_S = 0.5
GPU = "RTX 4060"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWVRAM_CACHE_DIR", str(tmp_path / "cache"))  # the shipped answers, nothing else
    monkeypatch.delenv("LOWVRAM_NO_SHIPPED", raising=False)


@pytest.mark.parametrize("component,op,tile", [("unet", "forward", 0), ("vae", "decode", 0), ("vae", "decode", 256)])
def test_estimate_of_a_real_component_is_within_the_bound_of_the_exact_simulation(component, op, tile):
    model = get_model("sd15")
    comp = model.component(component)
    # not an anchor; between 512² and 768². Tiled: composed from its tiles as the simulation composes them
    req = SimRequest(op=op, batch=1, width=640, height=384, vae_tile=tile)
    est = estimate_result(model, comp, req)
    assert est is not None and not est.extrapolated and (640, 384) not in est.sizes
    exact = simulate_component(model, comp, req)
    for field in ("activation_peak_bytes", "flops", "output_bytes", "input_bytes"):
        got, want = getattr(est.result, field), getattr(exact, field)
        assert abs(got - want) <= ERROR_BOUND * want, (field, got, want)
    assert est.result.weights_bytes == exact.weights_bytes


@pytest.mark.parametrize("component,batch", [("unet", 4), ("text_encoder", 2)])
def test_a_batch_never_simulated_is_scaled_within_the_bound(component, batch):
    """The UNet at batch 4 (CFG on two images) from batches 1 and 2; the text encoder at batch 2 from batch 1."""
    model = get_model("sd15")
    comp = model.component(component)
    req = SimRequest(batch=batch, width=512, height=512)
    est = estimate_result(model, comp, req)
    assert est is not None and est.batches == ((1, 2) if component == "unet" else (1,))
    exact = simulate_component(model, comp, req)
    for field in ("activation_peak_bytes", "flops", "output_bytes", "input_bytes"):
        got, want = getattr(est.result, field), getattr(exact, field)
        # the token ids (77 int64 per prompt, 616 bytes) round up to 512-byte blocks: twice batch 1's 1024
        # bytes is 512 more than batch 2's 1536 — a block, not a proportion
        assert abs(got - want) <= max(ERROR_BOUND * want, ROUNDING_SLACK_BYTES), (field, got, want)


def test_too_few_known_sizes_give_no_estimate_and_far_sizes_say_they_extrapolate():
    hidream = get_model("hidream-i1")  # only its default size ships: no estimate, the readout plans exactly
    assert estimate_result(hidream, hidream.component("transformer"), SimRequest(width=896, height=1152)) is None
    wl = Workload(896, 1152, 1, hidream.steps)
    assert estimated_plan(hidream, wl, machine_from_card(find_card(GPU)), Policy("lossless")) is None
    sd15 = get_model("sd15")
    far = estimate_result(sd15, sd15.component("unet"), SimRequest(batch=1, width=4096, height=4096))
    assert far is not None and far.extrapolated


def test_readout_of_an_unseen_size_is_estimated_at_once_then_exact():
    from lowvram.server.app import create_app
    from lowvram.server.config import ServerConfig
    from lowvram.server.models import Registry

    machine = machine_from_card(find_card(GPU))
    app = create_app(ServerConfig(registry=Registry([], {}), machine=machine, outputs=None))
    # guidance 1: no CFG, so the exact plan needs one UNet and one VAE simulation
    params = {"model": "sd15", "width": 576, "height": 448, "guidance": 1, "quality": "lossless"}
    with TestClient(app) as client:
        t0 = time.perf_counter()
        r = client.get("/lowvram/v1/readout", params=params)
        took = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["estimated"] and first["plan"]["estimated"] and first["exact"] == "pending"
        assert "estimated from nearby sizes" in first["plan"]["estimate_note"]
        assert took < READOUT_LIMIT_S, took
        deadline = time.monotonic() + EXACT_WAIT_S
        while True:
            got = client.get("/lowvram/v1/readout", params=params).json()
            if not got["estimated"]:
                break
            assert got["exact"] == "pending" and time.monotonic() < deadline, got.get("exact_error")
            time.sleep(POLL_S)
    spec = get_model("sd15")
    exact = make_plan(spec, Workload(576, 448, 1, spec.steps, guidance=False), machine, Policy("lossless"))
    assert not got["plan"]["estimated"] and got["plan"]["estimate_note"] == ""
    assert got["plan"]["peak_vram_bytes"] == exact.peak_vram_bytes
    assert got["plan"]["seconds_per_step"] == exact.seconds_per_step
    est = first["plan"]
    assert abs(est["peak_vram_bytes"] - exact.peak_vram_bytes) <= ERROR_BOUND * exact.peak_vram_bytes
    assert abs(est["seconds_per_step"] - exact.seconds_per_step) <= ERROR_BOUND * exact.seconds_per_step


def test_the_session_plans_from_exact_simulations_only(monkeypatch):
    """At a size the readout would estimate, the Session's planner asks the simulator (stood in for here:
    the real one takes half a minute) for every simulation, and its plan is not an estimate."""
    from lowvram.generate.session import planner_for
    from lowvram.simulate import api

    asked = []

    def fake_simulation(model, comp, req, use_cache, overrides):
        asked.append((comp.name, req))
        return SimResult(weights_bytes=0, activation_peak_bytes=2**20, output_bytes=2**10, input_bytes=2**10,
                         flops=10**12, params=0, seconds=0.0)

    def no_estimates(*args, **kwargs):
        raise AssertionError("the Session planned from an estimate")

    spec = get_model("sd15")
    wl = Workload(576, 448, 1, spec.steps)
    assert estimate_result(spec, spec.component("unet"), SimRequest(batch=2, width=576, height=448)) is not None
    monkeypatch.setattr(api, "_simulate_cached", fake_simulation)
    monkeypatch.setattr(estimate_mod, "estimate_result", no_estimates)
    monkeypatch.setattr("lowvram.plan.estimated.estimate_result", no_estimates)
    plan = planner_for(machine_from_card(find_card(GPU)))(spec, wl)
    assert not plan.estimated and plan.estimate_note == ""
    assert {(name, r.width, r.height) for name, r in asked if name == "unet"} == {("unet", 576, 448)}
    for q in POLICIES:  # so does every planner entry point with its default source
        assert not make_plan(spec, replace(wl, steps=10), machine_from_card(find_card(GPU)), Policy(q)).estimated


def test_exact_plans_run_once_per_key_in_the_background_and_report_failures():
    import threading

    from lowvram.server.exact_plans import DONE, FAILED, PENDING, ExactPlans

    plans, gate, runs = ExactPlans(), threading.Event(), []

    def slow():
        runs.append("slow")
        assert gate.wait(30)

    def broken():
        raise ValueError("no such size")

    try:
        assert plans.request("a", slow) == PENDING
        assert plans.request("a", slow) == PENDING  # queued or running: not queued again
        assert plans.request("b", broken) == PENDING  # one worker: waits behind "a"
        gate.set()
        deadline = time.monotonic() + 30
        while plans.state("b") == PENDING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plans.state("a") == DONE and runs == ["slow"]
        assert plans.state("b") == FAILED and plans.error("b") == "no such size"
        assert plans.request("a", slow) == DONE and runs == ["slow"]
    finally:
        plans.close()


def test_a_readout_whose_exact_plans_finish_meanwhile_answers_exactly(monkeypatch):
    """The page asks again only while `exact` is "pending": an answer estimated while the background plans
    finished must not say "done" and stay an estimate. Here they finish within the request."""
    from lowvram.server.app import create_app
    from lowvram.server.config import ServerConfig
    from lowvram.server.exact_plans import DONE, ExactPlans
    from lowvram.server.models import Registry

    monkeypatch.setattr(ExactPlans, "request", lambda self, key, plan: (plan(), DONE)[1])
    machine = machine_from_card(find_card(GPU))
    app = create_app(ServerConfig(registry=Registry([], {}), machine=machine, outputs=None))
    params = {"model": "sd15", "width": 640, "height": 448, "guidance": 1, "quality": "lossless"}
    with TestClient(app) as client:
        got = client.get("/lowvram/v1/readout", params=params).json()
    assert got["exact"] == DONE and not got["estimated"] and not got["plan"]["estimated"]
