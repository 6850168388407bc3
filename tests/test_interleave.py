"""Resident units spread among the streamed ones (plan/interleave.py): the copy timeline, the planner's
choice, the unit timings it reads (simulate/unit_compute.py) and the runtime honouring the chosen set."""

from dataclasses import replace

import pytest
import torch
from tiny import TINY

from lowvram.catalogue import MODELS, build_component
from lowvram.plan import Policy, Workload, make_plan
from lowvram.plan.facts import component_facts
from lowvram.plan.interleave import call_seconds, interleave, vram_bytes
from lowvram.plan.machine import resolve_machine
from lowvram.runtime.accountant import BudgetAccountant
from lowvram.runtime.executor import PlanExecutor
from lowvram.runtime.streaming import StreamingEngine
from lowvram.simulate import SimRequest
from lowvram.simulate.unit_compute import unit_compute_uncached
from lowvram.structure import streamable_units

GiB = 2**30


def test_the_timeline_idles_the_link_behind_a_resident_prefix():
    """Eight equal units, 1 s of compute and 1.5 s of copy each, four of them resident: 6 s of copies hide
    behind 8 s of compute at best. With the first four resident, the link copies two units while they
    compute and then the last ones wait on their copies (9 s); alternating, every copy hides (8 s)."""
    order, compute, copy = list(range(8)), [1.0] * 8, [1.5] * 8
    prefix = call_seconds(order, compute, copy, {0, 1, 2, 3})
    alternate = call_seconds(order, compute, copy, {0, 2, 4, 6})
    assert alternate == pytest.approx(8.0)  # the compute alone: the physical limit
    assert prefix == pytest.approx(9.0)
    # nothing streamed: the compute; everything streamed: the copies (the link is the bound)
    assert call_seconds(order, compute, copy, set(order)) == pytest.approx(8.0)
    assert call_seconds(order, compute, [3.0] * 8, set()) == pytest.approx(24.0)


def test_interleave_spreads_within_the_same_vram_and_keeps_the_prefix_when_it_is_as_fast():
    sizes, flops = [150] * 8, [1] * 8
    order = list(range(8))
    budget = vram_bytes(sizes, {0, 1, 2, 3})  # four resident + two buffers
    best = interleave(sizes, order, flops, 8.0, 100.0, budget, 4, set())  # 1 s compute, 1.5 s copy a unit
    assert best is not None and best.vram <= budget and len(best.resident) == 4
    assert best.seconds == pytest.approx(8.0) and best.prefix_seconds > best.seconds
    # copies far faster than compute: the prefix hides them already, nothing to gain
    assert interleave(sizes, order, flops, 8.0, 1e6, budget, 4, set()) is None


def test_a_third_buffer_lets_the_link_run_two_units_ahead():
    """Three streamed units (1 s of copy, 0.1 s of compute each), then a resident one computing 3 s. The link
    needs 3 s a call, as long as the resident unit computes. Two buffers: while it computes, only the next
    call's first two units can be copied (the third's buffer is the first's, which has not run yet), so
    the third copy (1 s) starts once the first unit has run: 3 + 0.1 + 1 + 0.1 = 4.2 s. Three
    buffers: all three copies hide behind the 3 s, and the call is its compute, 3.3 s."""
    order, compute, copy = [0, 1, 2, 3], [0.1, 0.1, 0.1, 3.0], [1.0, 1.0, 1.0, 0.0]
    assert call_seconds(order, compute, copy, {3}, 2) == pytest.approx(4.2)
    assert call_seconds(order, compute, copy, {3}, 3) == pytest.approx(3.3)
    # a buffer more is one largest streamed unit more on the device
    assert vram_bytes([100, 100, 100, 300], {3}, 3) == vram_bytes([100, 100, 100, 300], {3}, 2) + 100 == 600


@pytest.mark.parametrize("model,vram,buffers", [("sd35-large", "8GiB", 3), ("flux-dev", "8GiB", 2)])
def test_the_planner_gives_a_third_buffer_only_where_it_pays(model, vram, buffers):
    """SD3.5-Large's 8 GiB plan on an H100: its call gets faster with a third buffer than with any set
    through two (251 -> 177 ms on the timeline); Flux-dev's at 8 GiB would keep fewer units resident for it
    and get slower, so it keeps two (`PYTHONPATH=src python bench/interleave.py`)."""
    spec = MODELS[model]
    plan = make_plan(spec, Workload(1024, 1024, 1, 20), resolve_machine("H100 SXM", vram, "256GiB"), Policy("lossless"))
    den = next(c for c in plan.components if c.role == "denoiser")
    assert den.resident_indices and den.stream_buffers == buffers
    ub = component_facts(spec.component(den.name)).unit_bytes(den.precision, den.compute_dtype)
    assert den.vram_bytes == vram_bytes(ub, set(den.resident_indices), buffers)
    line = next(d for d in plan.decisions if "spread among the streamed ones" in d)
    assert ("through 3 device buffers" in line) == (buffers == 3)
    assert den.vram_bytes + den.activation_bytes + plan.reserve_bytes <= plan.peak_vram_bytes
    assert next(c for c in plan.to_json()["components"] if c["name"] == den.name)["stream_buffers"] == buffers


@pytest.mark.parametrize("model,gpu", [("flux-dev", "RTX 3060"), ("sd35-large", "RTX 4060")])
def test_disk_backed_denoisers_are_spread_too_without_a_larger_staging_buffer(model, gpu):
    """With 16 GB of RAM these denoisers stream from the file mapping at the disk's speed; a resident prefix
    idles the disk while it computes just as it idles the link, so the planner spreads them as well
    (timeline: Flux 7.5 -> 6.7 s, SD3.5-Large 5.9 -> 4.8 s a call). The plan counted two pinned staging
    buffers the size of the prefix's largest streamed unit in RAM: no larger unit may stream."""
    from lowvram.contract import STAGING_BUFFERS

    spec = MODELS[model]
    from lowvram.plan.planner import _make_plan
    from lowvram.simulate import simulate_component

    # the plan before the spread choice (make_plan applies it on top of this)
    prefix = _make_plan(spec, Workload(1024, 1024, 1, 28), resolve_machine(gpu, None, "16GB"), Policy("lossless"),
                        True, None, simulate_component)
    plan = make_plan(spec, Workload(1024, 1024, 1, 28), resolve_machine(gpu, None, "16GB"), Policy("lossless"))
    was = next(c for c in prefix.components if c.role == "denoiser")
    den = next(c for c in plan.components if c.role == "denoiser")
    assert den.source == was.source == "disk" and den.resident_indices and not was.resident_indices
    ub = component_facts(spec.component(den.name)).unit_bytes(den.precision, den.compute_dtype)
    streamed = [b for i, b in enumerate(ub) if i not in set(den.resident_indices)]
    assert max(streamed) <= max(ub[was.resident_units:])
    assert den.vram_bytes <= was.vram_bytes and plan.peak_ram_bytes == prefix.peak_ram_bytes
    assert plan.peak_ram_bytes >= STAGING_BUFFERS * max(streamed)
    line = next(d for d in plan.decisions if "spread among the streamed ones" in d)
    assert "(read from disk)" in line


def test_a_disk_backed_spread_set_streams_exactly_through_the_staging_buffers(tmp_path):
    """The executor's disk path (file mapping, no pinning, no layout, staged through pinned buffers) with
    a spread resident set and three buffers gives the unstreamed result, call after call."""
    from safetensors.torch import save_file

    from lowvram.runtime.loading import iter_safetensors, load_into

    torch.manual_seed(0)
    ref_m = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(8)])
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in ref_m.state_dict().items()}, str(path))
    with torch.device("meta"):
        m = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(8)])
    assert load_into(m, iter_safetensors([str(path)]), torch.float32, disk_backed=True)["missing"] == []
    x = torch.randn(3, 32)
    with torch.no_grad():
        ref = ref_m(x)
    eng = StreamingEngine(m, "cpu", (1, 4, 6), BudgetAccountant(1 << 30, "cpu"), pin_memory=False, coalesce=False,
                          stage_pageable=True, buffers=3).apply()
    try:
        with torch.no_grad():
            for _ in range(3):
                assert torch.equal(m(x), ref)
        assert eng.stats.staged > 0 and eng.stats.sync_loads == 0
        assert {u.idx for u in eng.units if u.resident} == {1, 4, 6}
    finally:
        eng.remove()


def test_unit_timings_cover_every_unit_that_runs_and_sum_to_the_call():
    spec = MODELS["flux-dev"]
    comp = spec.component("transformer")
    t = unit_compute_uncached(spec, comp, SimRequest(width=128, height=128, dtype="fp32"),
                              TINY["flux-dev-transformer"])
    units = streamable_units(build_component(comp, "meta", config_overrides=TINY["flux-dev-transformer"]))
    names = [u.name for u in units]
    leaves = {i for i, n in enumerate(names) if not any(m.startswith(n + ".") for m in names)}
    assert set(t["order"]) <= leaves and len(t["order"]) >= len(leaves) - 2  # unused units (if any) never run
    assert len(t["flops"]) == len(t["order"]) and 0 < sum(t["flops"]) <= t["total"]
    assert sum(t["flops"]) >= 0.95 * t["total"]  # nearly all of a transformer's work is inside its units


@pytest.mark.parametrize("model,vram", [("flux-dev", "12GiB"), ("sdxl", "4GiB")])
def test_the_planner_spreads_resident_units_on_a_streamed_denoiser(model, vram):
    machine = resolve_machine("H100 SXM", vram, "256GiB")
    plan = make_plan(MODELS[model], Workload(1024, 1024, 1, 20), machine, Policy("lossless"))
    den = next(c for c in plan.components if c.role == "denoiser")
    assert plan.fits and den.placement == "streamed" and den.resident_indices
    assert len(den.resident_indices) == den.resident_units < den.total_units
    ub = component_facts(MODELS[model].component(den.name)).unit_bytes(den.precision, den.compute_dtype)
    resident = set(den.resident_indices)
    assert den.vram_bytes == vram_bytes(ub, resident, den.stream_buffers)
    assert den.streamed_bytes == sum(b for i, b in enumerate(ub) if i not in resident)
    assert resident != set(range(len(resident)))  # not a prefix
    line = next(d for d in plan.decisions if "spread among the streamed ones" in d)
    assert f"{den.name}: {len(resident)}/{den.total_units} units resident" in line
    # the peak the plan states still holds: the spread set is no larger on the device than the prefix was
    assert den.vram_bytes + den.activation_bytes + plan.reserve_bytes <= plan.peak_vram_bytes


def test_a_cpu_plan_is_not_spread():
    plan = make_plan(MODELS["sdxl"], Workload(1024, 1024, 1, 20), resolve_machine(None, None, None), Policy("lossless"))
    assert all(not c.resident_indices for c in plan.components)


def test_the_runtime_keeps_exactly_the_planned_units_resident_and_stays_exact():
    """The executor hands the plan's indices and buffer count to the engine: those units (and split
    parents) are on the device for good, the others stream through that many buffers, and the output
    equals the unstreamed one."""
    spec = MODELS["flux-dev"]
    comp = spec.component("transformer")
    torch.manual_seed(0)
    module = build_component(comp, "cpu", dtype=torch.float32, config_overrides=TINY["flux-dev-transformer"])
    from lowvram.simulate.run import build_inputs

    torch.manual_seed(1)
    fn, kw = build_inputs(module, spec, comp, SimRequest(width=128, height=128, dtype="fp32"))
    with torch.no_grad():
        ref = fn(**kw)[0].clone()
    n = len(streamable_units(module))
    chosen = tuple(range(1, n, 3))
    plan = make_plan(spec, Workload(128, 128, 1, 2), resolve_machine("H100 SXM", "80GiB", "256GiB"), Policy("lossless"))
    cp = replace(next(c for c in plan.components if c.name == "transformer"), placement="streamed", total_units=n,
                 resident_units=len(chosen), resident_indices=chosen, precision="fp32", compute_dtype="fp32",
                 weight_bytes=0, params=0, stream_buffers=3)
    ex = PlanExecutor(replace(plan, components=(cp,)), {"transformer": module}, "cpu", weight_budget_bytes=1 << 30).apply()
    try:
        with torch.no_grad():
            for _ in range(2):
                assert torch.equal(fn(**kw)[0], ref)
        eng = ex.engines["transformer"]
        split = {u.idx for u in eng.units if u.resident and u.idx not in chosen}
        assert {u.idx for u in eng.units if u.resident} == set(chosen) | split
        assert all(u.idx not in chosen for u in eng.streamed) and eng.stats.copies > 0
        assert len(eng._pool.buffers) == 3  # the plan's buffer count
    finally:
        ex.remove()


def test_an_engine_takes_a_resident_set():
    torch.manual_seed(0)
    m = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(6)])
    x = torch.randn(2, 8)
    with torch.no_grad():
        ref = m(x)
    eng = StreamingEngine(m, "cpu", (0, 3), BudgetAccountant(1 << 30, "cpu")).apply()
    assert [u.resident for u in eng.units] == [True, False, False, True, False, False]
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(m(x), ref)
    eng.remove()


# ---------------------------------------------------------------- properties of the timeline and the search
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_units = st.integers(2, 10).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 100), min_size=n, max_size=n),  # bytes
    st.lists(st.integers(0, 50), min_size=n, max_size=n),  # flops
    st.permutations(range(n)),  # run order
    st.sets(st.integers(0, n - 1))))  # a resident set


@settings(max_examples=200, deadline=None)
@given(units=_units, link=st.sampled_from([5.0, 20.0, 100.0]), depth=st.integers(2, 4))
def test_the_timeline_is_bounded_and_monotone(units, link, depth):
    """A call is never faster than its compute or its copies, never slower than both in series; a unit made
    resident or a buffer added never makes it slower (each only loosens a constraint)."""
    sizes, flops, order, resident = units
    compute = [f / 10 for f in flops]
    run_s = [compute[u] for u in order]
    copy = [b / link for b in sizes]
    secs = call_seconds(order, run_s, copy, resident, depth)
    streamed = sum(c for u, c in enumerate(copy) if u not in resident)
    eps = 1e-9
    assert max(sum(run_s), streamed) - eps <= secs <= sum(run_s) + streamed + eps
    assert call_seconds(order, run_s, copy, resident, depth + 1) <= secs + eps
    for u in set(order) - resident:
        assert call_seconds(order, run_s, copy, resident | {u}, depth) <= secs + eps


@settings(max_examples=200, deadline=None)
@given(units=_units, link=st.sampled_from([5.0, 20.0, 100.0]), share=st.floats(0.2, 1.0),
       cap_biggest=st.booleans(), never_run=st.sets(st.integers(0, 9), max_size=2))
def test_the_search_keeps_its_promises(units, link, share, cap_biggest, never_run):
    """Whatever it is given (units that never run in the timed call included), a set the search returns
    fits the budget with its buffers, keeps the forced units, streams nothing larger than allowed, is at
    least MIN_GAIN faster than the prefix on the same timeline, and says truthfully what it streams and
    how long a call takes."""
    from lowvram.plan.interleave import MIN_GAIN

    sizes, unit_flops, order, forced = units
    order = [u for u in order if u not in never_run] or order[:1]
    forced = set(sorted(forced)[:1])  # a split parent at most
    flops = [unit_flops[u] for u in order]  # per run, as simulate/unit_compute.py gives them
    budget = int(sum(sizes) * share)
    # the prefix the planner's search would size: the most first units that fit with two buffers
    fits = [k for k in range(len(sizes) + 1) if vram_bytes(sizes, set(range(k)) | forced) <= budget]
    if not fits:
        return
    k = max(fits)
    biggest = max([b for i, b in enumerate(sizes) if i >= k and i not in forced] or [0]) if cap_biggest else None
    compute = sum(flops) / 10
    best = interleave(sizes, order, flops, compute, link, budget, k, forced, biggest)
    if best is None:
        return
    resident = set(best.resident)
    assert forced <= resident and best.buffers in (2, 3)
    assert best.vram == vram_bytes(sizes, resident, best.buffers) <= budget
    assert best.streamed == sum(b for i, b in enumerate(sizes) if i not in resident)
    if biggest is not None:
        assert all(b <= biggest for i, b in enumerate(sizes) if i not in resident)
    total = sum(flops) or 1
    run_s = [compute * f / total for f in flops]
    copy = [b / link for b in sizes]
    assert best.seconds == pytest.approx(call_seconds(order, run_s, copy, resident, best.buffers))
    assert best.seconds <= best.prefix_seconds * (1 - MIN_GAIN) + 1e-9
