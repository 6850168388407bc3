"""The runtime on CPU: every lossless feature equals the plain run; lossy ones within stated bounds."""

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import TINY

from lowvram.catalogue import MODELS, build_component
from lowvram.runtime.accountant import BudgetAccountant, BudgetExceeded
from lowvram.kernels.attention import attention_context
from lowvram.runtime.gguf_weights import dequantize, reference_dequantize, set_gguf_weight
from lowvram.runtime.precision import PrecisionConfig, apply_weight_precision
from lowvram.runtime.buffers import align
from lowvram.runtime.host_buffer import HostBuffer
from lowvram.runtime.streaming import StreamingEngine
from lowvram.simulate import SimRequest
from lowvram.simulate.run import build_inputs
from lowvram.structure import streamable_units


def _tiny(model, component, seed=0):
    spec = MODELS[model]
    comp = spec.component(component)
    torch.manual_seed(seed)
    m = build_component(comp, "cpu", dtype=torch.float32, config_overrides=TINY[comp.config])
    return spec, comp, m


def _inputs(spec, comp, module, req, seed=1):
    torch.manual_seed(seed)
    return build_inputs(module, spec, comp, req)


def _out(o):
    if isinstance(o, (tuple, list)):
        return o[0]
    for attr in ("sample", "last_hidden_state"):
        if hasattr(o, attr):
            return getattr(o, attr)
    return o


CASES = [("flux-dev", "transformer", SimRequest(batch=1, width=128, height=128, dtype="fp32")),
         ("sdxl", "unet", SimRequest(batch=2, width=64, height=64, dtype="fp32")),
         ("flux-dev", "text_encoder_2", SimRequest(batch=1, dtype="fp32"))]


@pytest.mark.parametrize("model,component,req", CASES, ids=[f"{m}-{c}" for m, c, _ in CASES])
@pytest.mark.parametrize("resident", [0, 3, 10_000])
def test_streaming_is_bit_exact_and_stays_in_budget(model, component, req, resident):
    spec, comp, ref_m = _tiny(model, component)
    fn, kw = _inputs(spec, comp, ref_m, req)
    with torch.no_grad():
        ref = _out(fn(**kw)).clone()
    _, _, m = _tiny(model, component)
    n_units = len(streamable_units(m))
    total = sum(p.numel() * p.element_size() for p in m.parameters()) + sum(b.numel() * b.element_size() for b in m.buffers())
    acc = BudgetAccountant(total, "cpu")  # the whole model's size is the budget: streaming must use less
    eng = StreamingEngine(m, "cpu", resident, acc, owner=component).apply()
    fn, kw = _inputs(spec, comp, m, req)
    with torch.no_grad():
        outs = [_out(fn(**kw)).clone() for _ in range(3)]  # three "steps"
    for o in outs:
        assert torch.equal(o, ref)
    assert acc.peak <= acc.budget
    if resident < n_units:
        # every streamed unit was really copied into the pool, every step
        assert eng.stats.order and eng.stats.copies >= 3 * len(eng.stats.order) and eng.stats.bytes_copied > 0
        assert eng.stats.sync_loads <= 1  # after the first (recording) call, prefetch is always in time
        assert acc.peak < total
    else:
        assert not eng.streamed and eng.stats.copies == 0
    eng.remove()


def test_budget_is_enforced():
    _, _, m = _tiny("flux-dev", "transformer")
    total = sum(p.numel() * p.element_size() for p in m.parameters())
    with pytest.raises(BudgetExceeded):
        StreamingEngine(m, "cpu", 10_000, BudgetAccountant(total // 2, "cpu")).apply()


class Backwards(torch.nn.Module):
    """Blocks created in one order and run in another: prefetch must follow the recorded order."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(6))

    def forward(self, x):
        for i in (5, 3, 1, 0, 2, 4):
            x = torch.tanh(self.blocks[i](x))
        return x


def _streamed_backwards():
    """A Backwards stack, an input, its unstreamed output, and the stack streamed with no unit resident."""
    torch.manual_seed(0)
    m = Backwards()
    x = torch.randn(4, 64)
    with torch.no_grad():
        ref = m(x)
    return m, x, ref, StreamingEngine(m, "cpu", 0, BudgetAccountant(10**9)).apply()


def test_recorded_order_drives_prefetch():
    m, x, ref, eng = _streamed_backwards()
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(m(x), ref)
    assert eng.stats.order[:6] == [f"blocks.{i}" for i in (5, 3, 1, 0, 2, 4)]
    assert eng.stats.sync_loads == 0
    # each unit's views into a slot are made once and reused: at most one set per slot
    seen = set()
    with torch.no_grad():
        m.blocks[1].register_forward_pre_hook(lambda mod, args: seen.add(mod.weight.data_ptr()))
        for _ in range(4):
            assert torch.equal(m(x), ref)
    assert all(0 < len(u.views) <= 2 for u in eng.streamed)
    unit = next(u for u in eng.streamed if u.name == "blocks.1")
    assert seen == {vs[0].data_ptr() for vs in unit.views.values()}
    eng.remove()
    assert all(not u.views for u in eng.units)


def test_next_call_first_unit_is_fetched_while_the_last_unit_runs():
    """Issue #13 item 2: the order wraps around, so the next step's first unit is copied during this
    step's last unit, and every call after the recording one starts without a synchronous load."""
    m, x, ref, eng = _streamed_backwards()
    first = next(u for u in eng.units if u.name == "blocks.5")
    seen = []  # during the last unit (blocks.4): is the first one (blocks.5) already in a slot?
    m.blocks[4].register_forward_pre_hook(lambda mod, args: seen.append(first.slot is not None))
    with torch.no_grad():
        for _ in range(4):
            assert torch.equal(m(x), ref)
    assert seen == [False, True, True, True]  # the recording call cannot know the order yet
    assert eng.stats.wraparound == 3 and eng.stats.sync_loads == 0
    eng.remove()


def test_three_buffers_keep_the_next_two_units_copied_ahead():
    """With a third device buffer (a planner choice, plan/interleave.py) the copies run two units ahead:
    when a unit starts, the next two in the recorded order are already in their slots, the pool holds
    three slots, and the result is the unstreamed one."""
    torch.manual_seed(0)
    m = Backwards()
    x = torch.randn(4, 64)
    with torch.no_grad():
        ref = m(x)
    acc = BudgetAccountant(10**9)
    eng = StreamingEngine(m, "cpu", 0, acc, buffers=3).apply()
    assert len(eng._pool.buffers) == 3 and acc.by_owner["component stream buffers"] == 3 * eng._pool.slot_bytes
    run = (5, 3, 1, 0, 2, 4)
    units = {u.name: u for u in eng.units}
    ahead = []  # at each unit's start: are the next two (wrapping into the next call) in slots?
    for j, i in enumerate(run):
        nxt = [units[f"blocks.{run[(j + d) % 6]}"] for d in (1, 2)]
        m.blocks[i].register_forward_pre_hook(lambda mod, args, nxt=nxt: ahead.append([u.slot is not None for u in nxt]))
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(m(x), ref)
    assert ahead[6:] == [[True, True]] * 12  # after the recording call, always two ahead
    assert eng.stats.sync_loads == 0 and eng.stats.copies == 6 * 3 + 2  # + the next call's first two
    eng.remove()
    assert acc.used == 0


def test_streaming_needs_two_buffers():
    with pytest.raises(ValueError, match="at least 2 device buffers"):
        StreamingEngine(torch.nn.Sequential(torch.nn.Linear(2, 2)), "cpu", 0, BudgetAccountant(10**9), buffers=1)


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(range(6)), resident=st.sets(st.integers(0, 5), max_size=5),
       buffers=st.integers(2, 4), staged=st.booleans(), stray=st.lists(st.integers(0, 5), max_size=3),
       omit=st.lists(st.sets(st.integers(0, 5), max_size=3), max_size=3))
def test_any_run_order_resident_set_and_buffer_count_is_exact(order, resident, buffers, staged, stray, omit):
    """Property: whatever order the blocks run in, whichever are resident, through however many buffers,
    pageable or not, with blocks called on their own between whole calls (out of order) and calls that
    leave some blocks out (jumping ahead in the recorded order), every result is the unstreamed one, whole
    calls after the first never load synchronously, and removing the engine gives every byte back."""
    torch.manual_seed(0)
    m = Backwards()
    m.forward = lambda x: _run_in(m, order, x)
    x = torch.randn(2, 64)
    with torch.no_grad():
        ref, ref_blocks = m(x), [m.blocks[i](x) for i in stray]
        ref_short = [_run_in(m, [i for i in order if i not in left_out], x) for left_out in omit]
    acc = BudgetAccountant(10**9)
    eng = StreamingEngine(m, "cpu", tuple(sorted(resident)), acc, buffers=buffers, stage_pageable=staged).apply()
    try:
        with torch.no_grad():
            for _ in range(3):
                assert torch.equal(m(x), ref)
            loads = eng.stats.sync_loads
            assert loads == 0
            for i, r in zip(stray, ref_blocks):
                assert torch.equal(m.blocks[i](x), r)
            assert torch.equal(m(x), ref)
            for left_out, r in zip(omit, ref_short):
                m.forward = lambda x, left_out=left_out: _run_in(m, [i for i in order if i not in left_out], x)
                assert torch.equal(m(x), r)
            m.forward = lambda x: _run_in(m, order, x)
            assert torch.equal(m(x), ref)
    finally:
        eng.remove()
    assert acc.used == 0 and all(p.device.type == "cpu" for p in m.parameters())
    with torch.no_grad():
        assert torch.equal(m(x), ref)


def _run_in(m, order, x):
    for i in order:
        x = torch.tanh(m.blocks[i](x))
    return x


def test_out_of_order_calls_wait_for_a_staged_copy_before_reusing_its_slot():
    """A block called on its own between whole calls takes a slot that may hold a unit whose staged copy is
    still in flight: the engine waits for that copy first, and every result stays exact."""
    torch.manual_seed(0)
    m = Backwards()
    x = torch.randn(4, 64)
    with torch.no_grad():
        ref, ref_block = m(x), m.blocks[3](x)
    eng = StreamingEngine(m, "cpu", 0, BudgetAccountant(10**9), stage_pageable=True).apply()
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(m(x), ref)
            assert torch.equal(m.blocks[3](x), ref_block)  # out of order: loaded synchronously
    assert eng.stats.staged > 0 and eng.stats.sync_loads >= 3
    eng.remove()


@pytest.mark.parametrize("model,component,req", CASES[:2], ids=[f"{m}-{c}" for m, c, _ in CASES[:2]])
def test_pageable_units_through_reused_staging_buffers_are_bit_exact(model, component, req):
    """Units that are not pinned go through two reused staging buffers on a worker thread; on the CPU the
    same path runs (plain host buffers) and the output must equal the unstreamed one, bit for bit."""
    spec, comp, ref_m = _tiny(model, component)
    fn, kw = _inputs(spec, comp, ref_m, req)
    with torch.no_grad():
        ref = _out(fn(**kw)).clone()
    _, _, m = _tiny(model, component)
    eng = StreamingEngine(m, "cpu", 1, BudgetAccountant(10**9), stage_pageable=True).apply()
    assert eng._staging is not None and len(eng._staging.buffers) == 2
    fn, kw = _inputs(spec, comp, m, req)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(_out(fn(**kw)), ref)
    assert eng.stats.staged > 0 and eng.stats.sync_loads <= 1
    worker = eng._worker
    eng.remove()
    assert worker._shutdown and eng._worker is None  # no thread left behind


@pytest.mark.parametrize("model,component,req", CASES[:2], ids=[f"{m}-{c}" for m, c, _ in CASES[:2]])
def test_each_laid_out_unit_moves_in_one_transfer_and_is_laid_out_once(model, component, req):
    """Issue #13 item 2: a unit's host tensors laid out in one buffer as in its slot move in one transfer, not
    one per tensor; the buffer is exactly the unit's size (no power-of-two rounding), and an engine placing the
    same module again (after an eviction) uses the laid-out buffers as they are."""
    spec, comp, ref_m = _tiny(model, component)
    fn, kw = _inputs(spec, comp, ref_m, req)
    with torch.no_grad():
        ref = _out(fn(**kw)).clone()
    _, _, m = _tiny(model, component)
    host_buffers = {}
    eng = StreamingEngine(m, "cpu", 1, BudgetAccountant(10**9), coalesce=True, host_buffers=host_buffers).apply()
    assert all(u.host is host_buffers[u.name] and u.host.nbytes == u.nbytes for u in eng.streamed)
    assert sum(len(u.tensors) for u in eng.streamed) > len(eng.streamed)  # units hold several tensors
    fn, kw = _inputs(spec, comp, m, req)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(_out(fn(**kw)), ref)
    assert eng.stats.copies > 0 and eng.stats.transfers == eng.stats.copies
    where = {u.name: [e[3].data_ptr() for e in u.tensors] for u in eng.streamed}
    eng.remove()
    again = StreamingEngine(m, "cpu", 1, BudgetAccountant(10**9), coalesce=True, host_buffers=host_buffers).apply()
    assert {u.name: [e[3].data_ptr() for e in u.tensors] for u in again.streamed} == where
    with torch.no_grad():
        assert torch.equal(_out(fn(**kw)), ref)
    again.remove()


def test_without_layout_every_tensor_is_its_own_transfer_and_the_pinned_cap_holds():
    _, x, ref, eng = _streamed_backwards()  # coalesce defaults to pinning, i.e. CUDA: off here
    with torch.no_grad():
        assert torch.equal(eng.module(x), ref)
    assert eng.stats.transfers == 2 * eng.stats.copies  # weight and bias of each Linear
    eng.remove()
    torch.manual_seed(0)
    m = Backwards()
    with torch.no_grad():
        ref = m(x)
    unit = align(64 * 64 * 4) + align(64 * 4)
    capped = StreamingEngine(m, "cpu", 0, BudgetAccountant(10**9), coalesce=True, pinned_cap_bytes=2 * unit).apply()
    assert [u.host is not None for u in capped.streamed] == [True, True, False, False, False, False]
    assert capped.pinned_bytes == 2 * unit
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(m(x), ref)
    capped.remove()


def test_host_buffer_is_exactly_sized_and_views_its_bytes():
    buf = HostBuffer(1000, pin=True)  # no CUDA here: registration is not tried, the memory is plain
    assert buf.nbytes == buf.tensor.numel() == 1000 and not buf.pinned
    like = torch.empty(10, 5, dtype=torch.float16)
    v = buf.view(256, like)
    v.fill_(1.5)
    assert v.shape == like.shape and v.dtype == like.dtype and buf.holds(v, 256) and not buf.holds(v, 0)
    assert torch.equal(buf.tensor[256:356].view(torch.float16), torch.full((50,), 1.5, dtype=torch.float16))
    buf.release()
    assert v.sum().item() == 75.0  # the views outlive the buffer's pin
    assert HostBuffer(0, pin=True).tensor.numel() == 0


def test_host_buffer_without_anonymous_mappings_is_an_exact_allocation(monkeypatch):
    """Windows has no MAP_ANONYMOUS: the buffer is an ordinary allocation of exactly the size, views work alike."""
    import mmap

    monkeypatch.delattr(mmap, "MAP_ANONYMOUS")
    buf = HostBuffer(4096, pin=True)
    assert buf._map is None and buf.nbytes == buf.tensor.numel() == 4096 and not buf.pinned
    v = buf.view(512, torch.empty(4, dtype=torch.float32))
    v.copy_(torch.arange(4.0))
    assert buf.holds(v, 512) and torch.equal(buf.tensor[512:528].view(torch.float32), torch.arange(4.0))


class Gated(torch.nn.Module):
    """Many small blocks (each one a unit); the first decides, as first-block caching does, whether the others
    compute: a skipped block is still called and returns its input, as diffusers' hook does."""

    def __init__(self, n=60):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(n))
        self.cached = False  # set by the test before a call
        self.decided = False  # the first block has run this call
        self.blocks[0].register_forward_hook(lambda m, a, o: setattr(self, "decided", True))
        for b in self.blocks[1:]:
            b.register_forward_pre_hook(self._gate, with_kwargs=True)

    def _gate(self, module, args, kwargs):
        module._skip_now = self.skips(module)

    def skips(self, module):
        return self.decided and self.cached and module is not self.blocks[0] and module in self.blocks

    def forward(self, x):
        self.decided = False
        for b in self.blocks:
            y = b(x)
            x = x if getattr(b, "_skip_now", False) else torch.tanh(y)
        return x


@pytest.mark.parametrize("buffers", [2, 3])
def test_units_a_call_skips_are_not_copied_and_prefetch_goes_to_the_next_that_runs(buffers):
    torch.manual_seed(0)
    m = Gated()
    x = torch.randn(3, 16)
    pattern = [False, True, True, False, True, False]
    refs = []
    with torch.no_grad():
        for cached in pattern:
            m.cached = cached
            refs.append(m(x))
    assert len(streamable_units(m)) == 60
    eng = StreamingEngine(m, "cpu", 0, BudgetAccountant(10**9), skip_unit=m.skips, buffers=buffers).apply()
    copies = []
    with torch.no_grad():
        for cached, ref in zip(pattern, refs):
            m.cached = cached
            before = eng.stats.copies
            assert torch.equal(m(x), ref)
            copies.append(eng.stats.copies - before)
    # counted per call, the next call's first units included (copied while this call's last unit runs):
    # recording: 60 + the next call's first (buffers - 1); cached: the next unit not yet in a slot (prefetched
    # while block 0 ran, before it decided) + the next call's first; cached again: only the next first unit;
    # computed: every unit not already in a slot, + the next call's first
    assert copies == [60 + buffers - 1, 2, 1, 59, 2, 59]
    assert eng.stats.skipped == 3 * 59 and eng.stats.sync_loads == 0
    eng.remove()


@settings(max_examples=100, deadline=None)
@given(pattern=st.lists(st.booleans(), min_size=1, max_size=6), resident=st.sets(st.integers(0, 11), max_size=6),
       buffers=st.integers(2, 4), staged=st.booleans())
def test_step_caching_composes_with_any_resident_set_and_buffer_count(pattern, resident, buffers, staged):
    """Property: cached and computed calls in any sequence, with any units resident and 2-4 buffers, pinned
    or staged: every result is the unstreamed one, no call loads synchronously, no skipped unit is copied."""
    torch.manual_seed(0)
    m = Gated(12)
    x = torch.randn(3, 16)
    refs = []
    with torch.no_grad():
        for cached in pattern:
            m.cached = cached
            refs.append(m(x))
    eng = StreamingEngine(m, "cpu", tuple(sorted(resident)), BudgetAccountant(10**9), skip_unit=m.skips,
                          buffers=buffers, stage_pageable=staged).apply()
    try:
        with torch.no_grad():
            for cached, ref in zip(pattern, refs):
                m.cached = cached
                before = eng.stats.copies
                assert torch.equal(m(x), ref)
                # a cached call runs block 0 only: at most the units prefetched before it decided, plus the
                # next call's first ones, are copied
                if cached:
                    assert eng.stats.copies - before <= 2 * (buffers - 1)
        assert eng.stats.sync_loads == 0
    finally:
        eng.remove()


class Branchy(torch.nn.Module):
    """Sub-units that some calls do not run at all (a skipped block's children): the recorded order has them."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(32, 32) for _ in range(6))
        self.short = False

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            if not (self.short and i in (2, 3)):
                x = torch.tanh(b(x))
        return x


def test_a_call_that_jumps_ahead_in_the_recorded_order_resyncs():
    torch.manual_seed(0)
    m = Branchy()
    x = torch.randn(2, 32)
    pattern = [False, True, False, True]
    with torch.no_grad():
        refs = []
        for short in pattern:
            m.short = short
            refs.append(m(x))
    eng = StreamingEngine(m, "cpu", 0, BudgetAccountant(10**9)).apply()
    with torch.no_grad():
        for short, ref in zip(pattern, refs):
            m.short = short
            assert torch.equal(m(x), ref)
    # each short call: block 4 comes where block 2 was expected: loaded synchronously, then followed, so
    # block 5 was prefetched (without the resync, block 5 would be a synchronous load too)
    assert eng.stats.resyncs == 2 and eng.stats.sync_loads == 2
    eng.remove()


@pytest.mark.parametrize("storage,tol", [("fp8", 0.08), ("int8", 0.02)])
def test_8bit_weights_within_tolerance_and_compose_with_streaming(storage, tol):
    """Tolerance: per-channel fp8-e4m3 keeps 3 mantissa bits (relative step 2^-4 = 6 %, errors partly
    average out over a dot product); int8 per-channel has 255 levels (0.4 % of the row max). We bound
    the relative L2 error of the whole tiny transformer's output."""
    spec, comp, ref_m = _tiny("flux-dev", "transformer")
    req = SimRequest(batch=1, width=128, height=128, dtype="fp32")
    fn, kw = _inputs(spec, comp, ref_m, req)
    with torch.no_grad():
        ref = _out(fn(**kw)).clone()
    _, _, m = _tiny("flux-dev", "transformer")
    n = apply_weight_precision(m, PrecisionConfig(storage, torch.float32))
    assert n > 0
    stored = [mm.weight.dtype for mm in m.modules() if isinstance(mm, torch.nn.Linear)]
    assert set(stored) == {torch.float8_e4m3fn if storage == "fp8" else torch.int8}
    eng = StreamingEngine(m, "cpu", 2, BudgetAccountant(10**9)).apply()
    fn, kw = _inputs(spec, comp, m, req)
    with torch.no_grad():
        out = _out(fn(**kw))
    rel = (out - ref).norm() / ref.norm()
    assert rel < tol, rel
    assert all(mm.weight.dtype != torch.float32 for mm in m.modules() if isinstance(mm, torch.nn.Linear))
    eng.remove()


GGUF_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]


def _random_blocks(qtype, n_blocks, rng):
    """Random GGUF blocks with sane f16 scales: every bit pattern of the quants is exercised."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # the f16 scale fields sit at fixed places; set them to small finite values
    def f16(at):
        raw[:, at:at + 2] = np.frombuffer(np.float16(rng.uniform(0.001, 0.05)).tobytes(), dtype=np.uint8)
    name = qtype.name
    if name in ("Q8_0", "Q4_0", "Q5_0"):
        f16(0)
    elif name in ("Q4_1", "Q5_1"):
        f16(0), f16(2)
    elif name in ("Q4_K", "Q5_K"):
        f16(0), f16(2)
    elif name == "Q6_K":
        f16(type_size - 2)
    return raw


@pytest.mark.parametrize("name", GGUF_TYPES)
def test_gguf_torch_dequantizer_matches_reference(name):
    qtype = gguf.GGMLQuantizationType[name]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(0)
    rows, cols = 8, 2 * max(block, 256)
    raw = _random_blocks(qtype, rows * cols // block, rng)
    ref = reference_dequantize(raw.reshape(rows, -1), qtype).reshape(rows, cols)
    ours = dequantize(torch.from_numpy(raw.reshape(-1)), qtype, (rows, cols), torch.float32).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6)


def test_gguf_linear_forward_streams_quantized_bytes():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64, bias=True)
    w = lin.weight.detach().numpy().astype(np.float32)
    raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    ref_w = torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0)).float()
    x = torch.randn(3, 256)
    expected = F.linear(x, ref_w, lin.bias)
    seq = torch.nn.Sequential(lin, torch.nn.Identity())
    set_gguf_weight(lin, torch.from_numpy(raw.reshape(-1)), gguf.GGMLQuantizationType.Q8_0, torch.float32)
    eng = StreamingEngine(seq, "cpu", 0, BudgetAccountant(10**9)).apply()
    with torch.no_grad():
        out = seq(x)
    torch.testing.assert_close(out, expected)
    assert eng.stats.bytes_copied >= raw.nbytes and lin.weight.dtype == torch.uint8  # quantised bytes moved
    eng.remove()


def test_chunked_attention_equals_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 300, 16) for _ in range(3))
    mask = torch.randn(2, 1, 300, 300)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with attention_context("chunked", 64):
        out = F.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    spec, comp, m = _tiny("flux-dev", "transformer")
    req = SimRequest(batch=1, width=128, height=128, dtype="fp32")
    fn, kw = _inputs(spec, comp, m, req)
    with torch.no_grad():
        ref = _out(fn(**kw))
        with attention_context("chunked", 16):
            out = _out(fn(**kw))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_cfg_split_equals_batch():
    """CFG as two batches of 1 gives the batch-of-2 result (float tolerance: different GEMM shapes)."""
    spec, comp, m = _tiny("sdxl", "unet")
    fn, kw = _inputs(spec, comp, m, SimRequest(batch=2, width=64, height=64, dtype="fp32"))
    with torch.no_grad():
        both = _out(fn(**kw))
        halves = []
        for i in range(2):
            kw_i = {k: (v[i:i + 1] if torch.is_tensor(v) and v.shape[:1] == (2,) else
                        {kk: vv[i:i + 1] for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in kw.items()}
            halves.append(_out(fn(**kw_i)))
    torch.testing.assert_close(torch.cat(halves), both, rtol=1e-4, atol=1e-5)


def test_tiled_vae_decode_is_close_to_full_and_survives_oom():
    from lowvram.runtime import vae as vae_rt

    c = MODELS["sd15"].component("vae")
    torch.manual_seed(0)
    vae = build_component(c, "cpu", dtype=torch.float32, config_overrides=TINY["sd-vae"])
    torch.manual_seed(1)
    lat = torch.randn(1, 4, 64, 64) * 0.5  # 128 px image (tiny VAE downsamples by 2)
    full = vae_rt.decode(vae, lat, tile=0)
    tiled = vae_rt.decode(vae, lat, tile=64)
    assert tiled.shape == full.shape
    # Blended overlaps: the tiled image stays close to the full decode (random weights amplify seams
    # relative to a trained VAE; bound the mean error to a few % of the output range).
    assert (tiled - full).abs().mean() < 0.05 * (full.max() - full.min())
    calls = {"n": 0}
    original = vae.decode

    def flaky(z, return_dict=True):  # the first (full-size) attempt runs out of memory
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(z, return_dict=return_dict)

    vae.decode = flaky
    retries = []
    out = vae_rt.decode(vae, lat, tile=0, on_retry=lambda a, b: retries.append((a, b)), min_tile=32)
    assert retries == [(0, 64)] and out.shape == full.shape
    torch.testing.assert_close(out, vae_rt.decode(vae, lat, tile=64))


def test_load_straight_into_fp8_by_positioned_reads(tmp_path):
    from safetensors.torch import save_file

    from lowvram.runtime.loading import iter_safetensors, load_into

    spec, comp, src = _tiny("flux-dev", "transformer")
    path = tmp_path / "tiny-flux.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    for precision in (None, PrecisionConfig("fp8", torch.float32)):
        target = build_component(comp, "meta", config_overrides=TINY[comp.config])
        report = load_into(target, iter_safetensors([str(path)]), torch.float32, precision)
        assert report["unexpected"] == []
        assert [k for k in report["missing"] if not k.endswith("weight_scale")] == []
        assert not any(p.is_meta for p in target.parameters())
        req = SimRequest(batch=1, width=128, height=128, dtype="fp32")
        fn, kw = _inputs(spec, comp, src, req)
        with torch.no_grad():
            ref = _out(fn(**kw))
        fn2, kw2 = _inputs(spec, comp, target, req)
        with torch.no_grad():
            out = _out(fn2(**kw2))
        if precision is None:
            assert torch.equal(out, ref)
        else:
            assert (out - ref).norm() / ref.norm() < 0.08
            assert any(p.dtype == torch.float8_e4m3fn for p in target.parameters())
